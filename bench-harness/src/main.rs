//! `bench-harness`: runs perf workloads against the release broker, beside the machine's own
//! limits measured in the same run, and writes a report folder (Markdown, JSON, SVG plots).
//!
//! `bench-harness run [workload.toml ...]` builds the release `broker` and `perf` binaries
//! (`cargo build --release -p broker -p perf`, unless `--no-build`), measures the limits in a
//! fresh data directory on the disk the broker will use, then runs every workload (`--reps`
//! times, interleaved, quoting medians) with perf, and optionally its produce side through
//! librdkafka (`--rdkafka`), each run against a broker of its own started on a free port and a
//! fresh data directory there (and stopped, and its directory removed, after the run). Before
//! the brokers, each maximum-rate workload's producers run alone against a sink that stores
//! nothing (`sink.rs`): how fast perf itself can send here. A workload with
//! `rate_of_max` runs at that fraction of the median maximum measured so far by produce-only
//! max-rate workloads with the same message size and partition count. `--soak-minutes` adds a long fixed-rate run to show
//! whether the broker's resident memory stays flat. `--latency-curve` runs the first such
//! workload again at other fractions of that maximum in every repetition, so the report can
//! show how its latency grows with the load.
//!
//! `--peer '<command>'` runs every workload again against another Kafka-compatible broker
//! started from that command line (see `Broker::start_peer`), one fresh peer per run, its
//! `rate_of_max` resolved from its own maxima, so the report can set ours beside it on the
//! same machine.
//!
//! `bench-harness limits` measures only the machine.

mod broker;
mod constants;
mod limits;
mod rdkafka_driver;
mod report;
mod sink;
mod svg;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::broker::Broker;
use crate::constants::{PERF_ALONE_DURATION_S, PERF_ALONE_WARMUP_S, SOAK_RETENTION_BYTES, SOAK_SEGMENT_BYTES};
use crate::report::{median, Machine, PerfAlone, Run, RunSet, Unread};
use crate::sink::Sink;
use crate::workload::WorkloadInfo;

#[derive(Debug, Parser)]
#[command(name = "bench-harness", version, about = "Benchmarks the broker against the machine's own limits")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run workloads and write a report folder.
    Run(RunArgs),
    /// Measure only the machine's limits.
    Limits {
        /// Directory on the disk to measure (default: under the target directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Workload files (default: every file in bench-harness/workloads, in name order).
    workloads: Vec<PathBuf>,
    /// Report folder (default: <target>/bench-reports/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Parent of the fresh data directory; must be on a real disk, not tmpfs (default:
    /// <target>/bench-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Repetitions of every workload; the report quotes medians.
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Overrides every workload's measured duration, in seconds.
    #[arg(long)]
    duration_s: Option<u64>,
    /// Overrides every workload's warm-up, in seconds.
    #[arg(long)]
    warmup_s: Option<u64>,
    /// Also run each workload's produce side through librdkafka.
    #[arg(long)]
    rdkafka: bool,
    /// After the workloads, a fixed-rate run of this many minutes to watch broker memory.
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// Fractions of the maximum, comma-separated (such as 0.1,0.25,0.75): in every repetition,
    /// the first workload with `rate_of_max` runs again at each, after the workloads (with
    /// `--peer`, the peer too, at each fraction of its own maximum).
    #[arg(long, value_delimiter = ',')]
    latency_curve: Vec<f64>,
    /// Use target/release/{broker,perf} as they are, without building.
    #[arg(long)]
    no_build: bool,
    /// Also run every workload against a peer broker started by this command line, one fresh
    /// peer per run. `{addr}` (127.0.0.1:port), `{host}`, `{port}` and `{data_dir}` (a fresh
    /// directory, also the working directory) are replaced; it must listen for Kafka clients
    /// on `{addr}` and advertise that address.
    #[arg(long)]
    peer: Option<String>,
    /// The peer's name in the report (default: the command's first word).
    #[arg(long)]
    peer_name: Option<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench-harness sits in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Limits { data_dir } => {
            let parent = data_dir.unwrap_or_else(|| target_dir().join("bench-data"));
            std::fs::create_dir_all(&parent)?;
            let dir = tempfile::Builder::new().prefix("limits-").tempdir_in(&parent)?;
            let c = iouring_storage::LogConfig::new("");
            let l = limits::measure(dir.path(), c.write_buffer_bytes, c.writes_in_flight_max, c.preallocate_step_bytes)?;
            println!("{}", serde_json::to_string_pretty(&l)?);
            Ok(())
        }
        Cmd::Run(a) => run(a),
    }
}

/// Builds the release binaries unless told not to; returns (broker, perf).
fn binaries(no_build: bool) -> Result<(PathBuf, PathBuf)> {
    let release = target_dir().join("release");
    let (broker, perf) = (release.join("broker"), release.join("perf"));
    if !no_build {
        eprintln!("building: cargo build --release -p broker -p perf");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "broker", "-p", "perf"])
            .current_dir(workspace_root())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p broker -p perf failed");
        }
    }
    for b in [&broker, &perf] {
        if !b.exists() {
            bail!(
                "{} is missing: run `cargo build --release -p broker -p perf`, or drop --no-build",
                b.display()
            );
        }
    }
    eprintln!("using {} and {}", broker.display(), perf.display());
    Ok((broker, perf))
}

fn run(a: RunArgs) -> Result<()> {
    let workloads: Vec<PathBuf> = if a.workloads.is_empty() {
        let dir = workspace_root().join("bench-harness/workloads");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        v.retain(|p| p.extension().is_some_and(|x| x == "toml"));
        v.sort();
        v
    } else {
        a.workloads.clone()
    };
    let infos: Vec<WorkloadInfo> = workloads.iter().map(|p| WorkloadInfo::load(p)).collect::<Result<_>>()?;
    // Checked before minutes of measuring.
    let soak_workload = soak_workload(&infos, a.soak_minutes)?.map(|i| (&workloads[i], &infos[i]));
    let curve_workload = curve_workload(&infos, &a.latency_curve)?.map(|i| (&workloads[i], &infos[i]));
    let (broker_bin, perf_bin) = binaries(a.no_build)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        target_dir().join("bench-reports").join(t.to_string())
    });
    std::fs::create_dir_all(out.join("runs"))?;
    let parent = a.data_dir.clone().unwrap_or_else(|| target_dir().join("bench-data"));
    std::fs::create_dir_all(&parent)?;
    let data = tempfile::Builder::new().prefix("run-").tempdir_in(&parent)?;

    let machine = Machine::describe(data.path());
    let log_config = iouring_storage::LogConfig::new("");
    let limits = limits::measure(
        data.path(),
        log_config.write_buffer_bytes,
        log_config.writes_in_flight_max,
        log_config.preallocate_step_bytes,
    )?;
    eprintln!(
        "limits: disk append {:.0} MB/s, read {:.0} MB/s, both at once {:.0} / {:.0} MB/s, fdatasync p50 {} µs p99 {} µs, loopback TCP {:.0} MB/s, memcpy {:.0} MB/s",
        limits.disk_append_mb_per_s,
        limits.disk_read_mb_per_s,
        limits.disk_mixed_append_mb_per_s,
        limits.disk_mixed_read_mb_per_s,
        limits.fdatasync_us_p50,
        limits.fdatasync_us_p99,
        limits.tcp_loopback_mb_per_s,
        limits.memcpy_mb_per_s
    );

    // perf's own ceiling, before any broker: each maximum-rate workload's producers against a
    // sink that stores nothing. A failure is a finding like any failed run.
    let mut failures: Vec<String> = Vec::new();
    let mut perf_alone = Vec::new();
    for (path, info) in workloads.iter().zip(&infos).filter(|(_, i)| i.is_max_rate()) {
        match run_perf_alone(&perf_bin, path, info, &a, &out) {
            Ok(alone) => perf_alone.push(alone),
            Err(e) => failed(&mut failures, &format!("{} (perf alone)", info.name), &e),
        }
    }

    std::fs::create_dir_all(out.join("logs"))?;
    // Every run gets a broker of its own on a fresh data directory: no run inherits another's
    // segments, cache or memory, and no run depends on topic deletion working under load.
    // With `peer`, the peer's command line instead of our broker.
    let with_broker = |label: &str, peer: Option<&str>, f: &mut dyn FnMut(&Broker) -> Result<Run>| -> Result<Run> {
        let dir = data.path().join(label);
        let log = out.join("logs").join(format!("{label}.log"));
        let broker = match peer {
            Some(command) => Broker::start_peer(command, &dir, &log)?,
            None => Broker::start(&broker_bin, &dir, &log)?,
        };
        eprintln!(
            "broker {} (pid {}) on {}, log {}",
            broker.program,
            broker.pid(),
            broker.addr,
            log.display()
        );
        let result = f(&broker);
        // A failed run's own error first: a broker that crashed mid-run also fails to stop,
        // and that second error must not hide the first.
        let stopped = broker.stop();
        let _ = std::fs::remove_dir_all(&dir);
        match (result, stopped) {
            (Ok(mut run), Ok(samples)) => {
                run.broker_samples = samples;
                Ok(run)
            }
            (Err(e), Err(stop)) => Err(e.context(format!("{label}: the broker also failed to stop: {stop:#}; log {}", log.display()))),
            (Err(e), Ok(_)) => Err(e.context(format!("{label}; broker log {}", log.display()))),
            (Ok(_), Err(stop)) => Err(stop.context(format!("{label}; broker log {}", log.display()))),
        }
    };
    // The raw append again just before each maximum-rate run, ours and the peer's: the report's
    // append limit is the median of these and the one at the start. A failed one is left out.
    let append_now = |label: &str, info: &WorkloadInfo| -> Option<f64> {
        if !info.is_max_rate() {
            return None;
        }
        let measured = limits::disk_append_now(
            data.path(),
            log_config.write_buffer_bytes,
            log_config.writes_in_flight_max,
            log_config.preallocate_step_bytes,
        );
        match measured {
            Ok(mb) => {
                eprintln!("limits: disk append {mb:.0} MB/s just before {label}");
                Some(mb)
            }
            Err(e) => {
                eprintln!("limits: the disk append before {label} failed, the one at the start stands: {e:#}");
                None
            }
        }
    };
    let peer_name = a.peer.as_deref().map(|c| peer_name(a.peer_name.as_deref(), c));
    let mut runs: Vec<Run> = Vec::new();
    let mut peer_runs: Vec<Run> = Vec::new();
    let mut rdkafka_runs = Vec::new();
    // A run that fails (a broker crash above all) is a finding: it goes into the report, and
    // the other runs go on.
    for rep in 0..a.reps {
        for (path, info) in workloads.iter().zip(&infos) {
            let rate = resolve_rate(info, info.rate_of_max, &runs, &infos)?;
            let label = format!("{}-rep{}", info.name, rep + 1);
            let append = append_now(&label, info);
            let run = with_broker(&label, None, &mut |broker| {
                let run = run_perf(&perf_bin, broker, path, info, rep, rate, &a, &out, None)?;
                if a.rdkafka {
                    let mut w = info.clone();
                    if let Some(d) = a.duration_s {
                        w.duration_s = d;
                    }
                    if let Some(d) = a.warmup_s {
                        w.warmup_s = d;
                    }
                    eprintln!("== {} through librdkafka (rep {})", info.name, rep + 1);
                    let r = rdkafka_driver::run(&broker.addr, &w, rate.unwrap_or(0))
                        .with_context(|| format!("{} through librdkafka", info.name))?;
                    eprintln!(
                        "   {:.0} msg/s {:.1} MB/s, publish p99 {} µs",
                        r.msg_per_s, r.mb_per_s, r.publish_us_p99
                    );
                    rdkafka_runs.push(r);
                }
                Ok(run)
            });
            match run {
                Ok(mut run) => {
                    run.disk_append_mb_per_s = append;
                    runs.push(run);
                }
                Err(e) => {
                    failed(&mut failures, &label, &e);
                }
            }
            // The peer right after ours, so both see the machine alike. A workload at a fraction
            // of the maximum runs at that fraction of the peer's own maximum: latency at half of
            // each broker's capacity, as the workload defines it (at our rate, a slower peer
            // only queues).
            if let (Some(command), Some(name)) = (a.peer.as_deref(), peer_name.as_deref()) {
                let label = format!("{}-{label}", file_safe(name));
                let rate = match resolve_rate(info, info.rate_of_max, &peer_runs, &infos) {
                    Ok(rate) => rate,
                    Err(e) => {
                        failed(&mut failures, &label, &e);
                        continue;
                    }
                };
                let append = append_now(&label, info);
                match with_broker(&label, Some(command), &mut |peer| {
                    run_perf(&perf_bin, peer, path, info, rep, rate, &a, &out, Some(name))
                }) {
                    Ok(mut run) => {
                        run.disk_append_mb_per_s = append;
                        peer_runs.push(run);
                    }
                    Err(e) => {
                        failed(&mut failures, &label, &e);
                    }
                }
            }
        }
        // The curve's points after the workloads, so each rests on this repetition's maximum
        // too; a peer's right after ours, at the share of its own maximum.
        if let Some((path, info)) = curve_workload {
            for &share in &a.latency_curve {
                let point = curve_point(&info.name, share);
                // The point as a workload of its own: its name, and its share (which the run
                // records as its load; perf gets the rate itself).
                let mut point_info = info.clone();
                point_info.name = point.clone();
                point_info.rate_of_max = Some(share);
                let mut brokers: Vec<(Option<&str>, Option<&str>)> = vec![(None, None)];
                if let (Some(command), Some(name)) = (a.peer.as_deref(), peer_name.as_deref()) {
                    brokers.push((Some(command), Some(name)));
                }
                for (command, name) in brokers {
                    let (label, done) = match name {
                        Some(name) => (format!("{}-{point}-rep{}", file_safe(name), rep + 1), &mut peer_runs),
                        None => (format!("{point}-rep{}", rep + 1), &mut runs),
                    };
                    let rate = match resolve_rate(info, Some(share), done, &infos) {
                        Ok(rate) => rate,
                        Err(e) => {
                            failed(&mut failures, &label, &e);
                            continue;
                        }
                    };
                    match with_broker(&label, command, &mut |broker| {
                        run_perf(&perf_bin, broker, path, &point_info, rep, rate, &a, &out, name)
                    }) {
                        Ok(mut run) => {
                            run.curve_of = Some(info.name.clone());
                            done.push(run);
                        }
                        Err(e) => failed(&mut failures, &label, &e),
                    }
                }
            }
        }
    }
    if let Some((path, info)) = soak_workload {
        let rate = resolve_rate(info, info.rate_of_max, &runs, &infos)?;
        let soak = RunArgs {
            duration_s: Some(a.soak_minutes * 60),
            warmup_s: Some(0),
            workloads: vec![],
            ..a.clone_flags()
        };
        // Minutes at hundreds of MB/s would fill the disk: the soak's topics keep only their
        // newest segments.
        let soak_path = derived_workload(path, &out.join("soak.toml"), |table| {
            let mut configs = toml::Table::new();
            configs.insert("retention.bytes".into(), SOAK_RETENTION_BYTES.to_string().into());
            configs.insert("segment.bytes".into(), SOAK_SEGMENT_BYTES.to_string().into());
            table.insert("topic_config".into(), configs.into());
            // A consumer that falls behind retention then asks for deleted offsets. A run that
            // fails there measures no memory: it goes on from the log's end instead, as a Kafka
            // consumer with `auto.offset.reset=latest` would, and the report counts what it
            // skipped.
            if table.get("mode").and_then(toml::Value::as_str).unwrap_or("end-to-end") == "end-to-end" {
                table.entry("consumer_offset_reset").or_insert_with(|| "latest".into());
            }
        })?;
        match with_broker("soak", None, &mut |broker| {
            run_perf(&perf_bin, broker, &soak_path, info, usize::MAX, rate, &soak, &out, None)
        }) {
            Ok(mut run) => {
                run.soak = true;
                runs.push(run);
            }
            Err(e) => {
                failed(&mut failures, "soak", &e);
            }
        }
    }
    drop(data);

    let set = RunSet {
        machine,
        limits,
        runs,
        rdkafka: rdkafka_runs,
        perf_alone,
        peer: peer_name.map(|name| report::Peer {
            name,
            command: a.peer.clone().unwrap_or_default(),
            runs: peer_runs,
        }),
        failures,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        reps: a.reps,
    };
    let md = report::write(&set, &out)?;
    println!("{md}");
    eprintln!("report: {}", out.display());
    Ok(())
}

impl RunArgs {
    fn clone_flags(&self) -> RunArgs {
        RunArgs {
            workloads: self.workloads.clone(),
            out: self.out.clone(),
            data_dir: self.data_dir.clone(),
            reps: self.reps,
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            rdkafka: self.rdkafka,
            soak_minutes: self.soak_minutes,
            latency_curve: self.latency_curve.clone(),
            no_build: self.no_build,
            peer: self.peer.clone(),
            peer_name: self.peer_name.clone(),
        }
    }
}

/// A run that failed: said now, and kept for the report's "Failed runs".
fn failed(failures: &mut Vec<String>, label: &str, e: &anyhow::Error) {
    eprintln!("FAILED {label}: {e:#}");
    failures.push(format!("{label}: {e:#}"));
}

/// The peer's name: the one given, or the file name of the command's first word.
fn peer_name(given: Option<&str>, command: &str) -> String {
    given.map(str::to_owned).unwrap_or_else(|| {
        let first = command.split_whitespace().next().unwrap_or("peer");
        Path::new(first)
            .file_name()
            .map_or_else(|| first.to_owned(), |f| f.to_string_lossy().into_owned())
    })
}

/// `name` as one component of a file name: what is not a letter, digit, `-`, `_` or `.`
/// becomes `-` (a peer named "build at b78aa18/old" names its logs and reports too).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .collect()
}

/// The rate of a workload run at `share` of the maximum (its `rate_of_max`, or a point of the
/// latency curve): that fraction of the median publish rate of the workloads run so far that
/// anchor it (`WorkloadInfo::anchors`). `None` for a share of `None`.
fn resolve_rate(info: &WorkloadInfo, share: Option<f64>, runs: &[Run], infos: &[WorkloadInfo]) -> Result<Option<u64>> {
    let Some(f) = share else { return Ok(None) };
    let maxima: Vec<f64> = runs
        .iter()
        .filter(|r| infos.iter().any(|i| i.name == r.workload && i.anchors(info)))
        .filter_map(|r| r.perf["publish"]["msg_per_s"].as_f64())
        .collect();
    let Some(max) = median(maxima) else {
        bail!(
            "workload {} asks for rate_of_max = {f}, but no produce-only max-rate workload with {} B messages and {} partitions ran before it",
            info.name,
            info.message_size,
            info.partitions_per_topic
        )
    };
    Ok(Some((max * f).round() as u64))
}

/// How much a sampled counter grew from `a` to `b`, in seconds per second when the counter
/// counts `ticks_per_s` a second (PSI's microseconds, io_ticks' milliseconds); None if either
/// sample lacks it.
fn growth_per_s(a: Option<u64>, b: Option<u64>, ticks_per_s: f64, secs: f64) -> Option<f64> {
    a.zip(b).map(|(a, b)| b.saturating_sub(a) as f64 / ticks_per_s / secs)
}

#[allow(clippy::too_many_arguments)]
fn run_perf(
    perf: &Path,
    broker: &Broker,
    path: &Path,
    info: &WorkloadInfo,
    rep: usize,
    rate: Option<u64>,
    a: &RunArgs,
    out: &Path,
    peer: Option<&str>,
) -> Result<Run> {
    let label = if rep == usize::MAX {
        "soak".to_owned()
    } else {
        format!("rep{}", rep + 1)
    };
    let stem = match peer {
        Some(name) => format!("{}-{}-{label}", file_safe(name), info.name),
        None => format!("{}-{label}", info.name),
    };
    let json = out.join("runs").join(format!("{stem}.json"));
    let mut cmd = Command::new(perf);
    // --delete-topics: a maximum-rate run writes tens of GB; free them before the next client.
    cmd.arg(path)
        .args(["--bootstrap", &broker.addr, "--delete-topics", "--json"])
        .arg(&json);
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    if let Some(d) = a.duration_s {
        cmd.args(["--duration-s", &d.to_string()]);
    }
    if let Some(d) = a.warmup_s {
        cmd.args(["--warmup-s", &d.to_string()]);
    }
    eprintln!(
        "== {}{} ({label}{})",
        peer.map(|p| format!("{p}: ")).unwrap_or_default(),
        info.name,
        rate.map(|r| format!(", {r} msg/s")).unwrap_or_default()
    );
    let (rss_before, _) = broker.counters();
    let misses_before = broker.batch_cache_misses();
    let t0 = broker.elapsed_s();
    let status = cmd.status().with_context(|| format!("running {}", perf.display()))?;
    let t1 = broker.elapsed_s();
    let (rss_after, _) = broker.counters();
    let batch_cache_misses = match (misses_before, broker.batch_cache_misses()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    if !status.success() {
        bail!("perf failed on {} ({status}); broker log: {}", path.display(), broker.log.display());
    }
    let perf_report: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    // perf's measured window on the broker's sample clock, from perf's own account of it: its
    // set-up, warm-up and any backlog before, and after it the drain and the deletion of the
    // topics (seconds for the tens of GB a maximum-rate run writes, with the broker idle). Up to
    // perf's exit instead, that idle tail made the broker's CPU at maximum rate 0.67 cores where
    // its samples inside the window said 0.83 to 0.92.
    let from = t0 + perf_report["measured_from_s"].as_f64().unwrap_or(0.0);
    let until = (from + perf_report["measured_s"].as_f64().unwrap_or(0.0)).min(t1);
    let samples: Vec<_> = broker.samples().into_iter().filter(|s| s.t_s >= from && s.t_s <= until).collect();
    let (read_bytes, cpu_cores, cpu_pressure, idle_cores, disk_busy) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if b.t_s > a.t_s => {
            let secs = b.t_s - a.t_s;
            let pressure = growth_per_s(a.cpu_pressure_us, b.cpu_pressure_us, 1e6, secs);
            let idle = a.machine_idle_s.zip(b.machine_idle_s).map(|(a, b)| (b - a).max(0.0) / secs);
            let busy = growth_per_s(a.disk_busy_ms, b.disk_busy_ms, 1e3, secs);
            (
                b.read_bytes.saturating_sub(a.read_bytes),
                (b.cpu_s - a.cpu_s) / secs,
                pressure,
                idle,
                busy,
            )
        }
        _ => (0, 0.0, None, None, None),
    };
    let unread: Vec<u64> = samples.iter().filter_map(|s| s.unread_bytes).collect();
    Ok(Run {
        workload: info.name.clone(),
        rep,
        soak: false,
        rate,
        load: rate.and(info.rate_of_max),
        curve_of: None,
        broker_read_bytes: read_bytes,
        broker_batch_cache_misses: batch_cache_misses,
        broker_cpu_cores: cpu_cores,
        cpu_pressure,
        machine_idle_cores: idle_cores,
        disk_busy,
        broker_unread: Unread::of(&unread),
        broker_rss_before_bytes: rss_before,
        broker_rss_after_bytes: rss_after,
        broker_t_s: (t0, t1),
        broker_samples: Vec::new(),
        disk_append_mb_per_s: None,
        perf: perf_report,
    })
}

/// Writes the workload file at `path`, changed by `edit`, to `to` (in the report folder, so
/// the report keeps what perf ran), and returns `to`. perf validates the result.
fn derived_workload(path: &Path, to: &Path, edit: impl FnOnce(&mut toml::Table)) -> Result<PathBuf> {
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(path)?)?;
    edit(&mut table);
    std::fs::write(to, toml::to_string(&table)?)?;
    Ok(to.to_path_buf())
}

/// perf's producers alone: `info`'s workload (a maximum-rate one) in produce mode against a
/// sink that acknowledges each request as soon as it has read it, for at most
/// `PERF_ALONE_DURATION_S` after `PERF_ALONE_WARMUP_S`. Fails if perf counts more messages
/// acknowledged than the sink acknowledged.
fn run_perf_alone(perf: &Path, path: &Path, info: &WorkloadInfo, a: &RunArgs, out: &Path) -> Result<PerfAlone> {
    let alone_path = derived_workload(path, &out.join(format!("{}-perf-alone.toml", info.name)), |table| {
        table.insert("mode".into(), "produce".into());
        // Keys only end-to-end mode takes.
        table.remove("consumer_backlog_mb");
        table.remove("consumer_offset_reset");
    })?;
    let json = out.join("runs").join(format!("{}-perf-alone.json", info.name));
    let duration = a.duration_s.unwrap_or(PERF_ALONE_DURATION_S).min(PERF_ALONE_DURATION_S);
    let warmup = a.warmup_s.unwrap_or(PERF_ALONE_WARMUP_S).min(PERF_ALONE_WARMUP_S);
    let sink = Sink::start()?;
    eprintln!("== {} (perf alone, into a sink on {})", info.name, sink.addr);
    let (cpu_before, t0) = (broker::proc_cpu_s(std::process::id()), std::time::Instant::now());
    let status = Command::new(perf)
        .arg(&alone_path)
        .args(["--bootstrap", &sink.addr, "--delete-topics", "--quiet", "--json"])
        .arg(&json)
        .args(["--duration-s", &duration.to_string(), "--warmup-s", &warmup.to_string()])
        .status()
        .with_context(|| format!("running {}", perf.display()))?;
    let sink_cpu_cores = (broker::proc_cpu_s(std::process::id()) - cpu_before) / t0.elapsed().as_secs_f64().max(1e-9);
    if !status.success() {
        bail!("perf failed against the sink ({status})");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let f = |pointer: &str| report.pointer(pointer).and_then(Value::as_f64).unwrap_or(0.0);
    let acked = f("/publish/messages") as u64;
    if acked > sink.records() {
        bail!(
            "perf counted {acked} messages acknowledged, the sink acknowledged {}",
            sink.records()
        );
    }
    Ok(PerfAlone {
        workload: info.name.clone(),
        msg_per_s: f("/publish/msg_per_s"),
        mb_per_s: f("/publish/mb_per_s"),
        perf_cpu_cores: f("/perf_cpu_cores"),
        sink_cpu_cores,
    })
}

/// Which workload a soak of `minutes` repeats: the first at a fixed share of a maximum, `None`
/// without a soak.
fn soak_workload(infos: &[WorkloadInfo], minutes: u64) -> Result<Option<usize>> {
    if minutes == 0 {
        return Ok(None);
    }
    first_at_share(infos, "--soak-minutes").map(Some)
}

/// Which workload the latency curve's `shares` repeat: the first at a fixed share of a maximum,
/// `None` without a curve. Each share must be a fraction in (0, 1], as `rate_of_max` is.
fn curve_workload(infos: &[WorkloadInfo], shares: &[f64]) -> Result<Option<usize>> {
    if shares.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = shares.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
        bail!("--latency-curve: {bad} is not a fraction of the maximum in (0, 1]");
    }
    first_at_share(infos, "--latency-curve").map(Some)
}

fn first_at_share(infos: &[WorkloadInfo], option: &str) -> Result<usize> {
    infos.iter().position(|i| i.rate_of_max.is_some()).with_context(|| {
        format!("{option} needs a workload with rate_of_max (such as 2-fixed-rate-latency.toml) and the maximum it is a share of")
    })
}

/// The workload name of a latency-curve point: `fixed-rate-latency-25pct` for a quarter of
/// the maximum. It names the run's files and plots too, so it stays one file name component.
fn curve_point(workload: &str, share: f64) -> String {
    format!("{workload}-{}pct", format_share(share * 100.0))
}

/// A percentage without a trailing ".0", with "p" for the point: 25 → "25", 12.5 → "12p5".
fn format_share(pct: f64) -> String {
    let rounded = (pct * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}").replace('.', "p")
    }
}

#[cfg(test)]
mod tests {
    use super::{curve_point, curve_workload, file_safe, growth_per_s, peer_name, soak_workload};

    /// The shipped max-throughput and fixed-rate workloads.
    fn max_and_fixed() -> (super::WorkloadInfo, super::WorkloadInfo) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let load = |f: &str| super::WorkloadInfo::load(&dir.join(f)).unwrap();
        (load("1-max-throughput.toml"), load("2-fixed-rate-latency.toml"))
    }

    /// PSI's microseconds and io_ticks' milliseconds both become seconds per second; a counter
    /// missing from either sample gives nothing, and one that went back gives 0.
    #[test]
    fn a_sampled_counter_grows_in_seconds_per_second() {
        assert_eq!(growth_per_s(Some(1_000_000), Some(3_000_000), 1e6, 4.0), Some(0.5));
        assert_eq!(growth_per_s(Some(100), Some(1_700), 1e3, 2.0), Some(0.8));
        assert_eq!(growth_per_s(None, Some(5), 1e3, 1.0), None);
        assert_eq!(growth_per_s(Some(5), None, 1e3, 1.0), None);
        assert_eq!(growth_per_s(Some(9), Some(5), 1e3, 1.0), Some(0.0));
    }

    #[test]
    fn a_soak_repeats_the_first_fixed_share_workload_and_refuses_without_one() {
        let (max, fixed) = max_and_fixed();
        let infos = [max.clone(), fixed.clone(), fixed];
        assert_eq!(soak_workload(&infos, 10).unwrap(), Some(1));
        assert_eq!(soak_workload(&infos, 0).unwrap(), None);
        let err = soak_workload(std::slice::from_ref(&max), 10).unwrap_err();
        assert!(err.to_string().contains("rate_of_max"), "{err}");
        assert_eq!(soak_workload(&[max], 0).unwrap(), None, "no soak asked, nothing to refuse");
    }

    #[test]
    fn a_latency_curve_repeats_the_first_fixed_share_workload_at_fractions_of_the_maximum() {
        let (max, fixed) = max_and_fixed();
        let infos = [max.clone(), fixed];
        assert_eq!(curve_workload(&infos, &[0.1, 0.25]).unwrap(), Some(1));
        assert_eq!(curve_workload(&infos, &[]).unwrap(), None);
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let err = curve_workload(&infos, &[0.25, bad]).unwrap_err();
            assert!(err.to_string().contains("(0, 1]"), "{bad}: {err}");
        }
        let err = curve_workload(std::slice::from_ref(&max), &[0.25]).unwrap_err();
        assert!(err.to_string().contains("rate_of_max"), "{err}");
        assert_eq!(curve_point("fixed-rate-latency", 0.25), "fixed-rate-latency-25pct");
        assert_eq!(curve_point("fixed-rate-latency", 0.125), "fixed-rate-latency-12p5pct");
        assert_eq!(curve_point("fixed-rate-latency", 1.0), "fixed-rate-latency-100pct");
    }

    #[test]
    fn a_peer_is_named_by_its_command_unless_named() {
        assert_eq!(peer_name(None, "/work/peer/bin/tansu broker --x {addr}"), "tansu");
        assert_eq!(peer_name(None, "redpanda start"), "redpanda");
        assert_eq!(
            peer_name(Some("broker at b78aa18"), "/tmp/broker --listen {addr}"),
            "broker at b78aa18"
        );
    }
    #[test]
    fn a_peer_name_becomes_one_file_name_component() {
        assert_eq!(file_safe("broker at b78aa18/old"), "broker-at-b78aa18-old");
        assert_eq!(file_safe("tansu-0.6.0_sqlite"), "tansu-0.6.0_sqlite");
    }
}
