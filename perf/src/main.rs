//! The `perf` command: runs a workload file against a Kafka-compatible endpoint and prints a
//! summary, optionally JSON.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use perf::{Mode, RunOptions, Workload};

/// Load generator for any Kafka-compatible endpoint: produce, consume and end-to-end latency.
#[derive(Debug, Parser)]
#[command(name = "perf", version)]
struct Args {
    /// Workload file (TOML; see perf/src/workload.rs for the format).
    workload: PathBuf,
    /// Any broker of the cluster, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Overrides the workload's mode: produce, consume or end-to-end.
    #[arg(long, value_parser = parse_mode)]
    mode: Option<Mode>,
    /// Messages per second over all producers (0: maximum); overrides the workload's rate.
    #[arg(long)]
    rate: Option<u64>,
    /// Overrides the workload's measured duration, in seconds.
    #[arg(long)]
    duration_s: Option<u64>,
    /// Overrides the workload's warm-up, in seconds.
    #[arg(long)]
    warmup_s: Option<u64>,
    /// Writes the report as JSON to this file ("-" for stdout, which then holds only JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Deletes the run's topics when it ends.
    #[arg(long)]
    delete_topics: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "produce" => Ok(Mode::Produce),
        "consume" => Ok(Mode::Consume),
        "end-to-end" | "e2e" => Ok(Mode::EndToEnd),
        _ => Err(format!("unknown mode `{s}`: produce, consume or end-to-end")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut w = Workload::load(&args.workload)?;
    if let Some(m) = args.mode {
        w.mode = m;
    }
    if let Some(d) = args.duration_s {
        w.duration_s = d;
    }
    if let Some(d) = args.warmup_s {
        w.warmup_s = d;
    }
    w.validate()?;
    let opts = RunOptions {
        bootstrap: args.bootstrap.clone(),
        progress: !args.quiet,
        rate: args.rate,
        delete_topics: args.delete_topics,
    };
    let report = perf::run(&w, &opts).with_context(|| format!("running {} against {}", w.name, args.bootstrap))?;
    let json = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        Some(p) => {
            std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
            print!("{}", report.summary());
        }
        None => print!("{}", report.summary()),
    }
    Ok(())
}
