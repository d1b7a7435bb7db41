//! The report folder: `report.md` (what a person reads, figures beside their limits as
//! ratios), `report.json` (everything, for machines), `runs/*.json` (perf's own reports) and
//! SVG plots of latency by percentile, throughput over time and broker memory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::broker::ProcSample;
use crate::constants::{
    PERF_HEADROOM_MIN, SOAK_MEMORY_WINDOW_S, SOAK_SETTLE_S, TARGET_APPEND_RATIO_MIN, TARGET_END_TO_END_P99_US_MAX,
    TARGET_MEMORY_GROWTH_MAX, TARGET_PUBLISH_P999_US_MAX, TARGET_PUBLISH_P99_US_MAX,
};
use crate::limits::Limits;
use crate::rdkafka_driver::RdkafkaRun;
use crate::svg::{nines, nines_ticks, render, Chart, Series};

/// The machine, as far as the report needs to describe it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// Filesystem type and device of the data directory, from /proc/mounts.
    pub filesystem: String,
    /// The I/O scheduler of that device's queue (sysfs): it decides how reads and writes share
    /// the disk when consumers read a backlog while producers write.
    pub io_scheduler: String,
}

impl Machine {
    pub fn describe(dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let filesystem = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[0], f[1])))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu,
            memory_gib: mem_kb / 1024.0 / 1024.0,
            kernel,
            filesystem,
            io_scheduler: crate::limits::queue_attribute(&dir, "scheduler")
                .and_then(|all| {
                    // The active one is bracketed: "none [mq-deadline] kyber bfq".
                    let start = all.find('[')? + 1;
                    let end = start + all[start..].find(']')?;
                    Some(all[start..end].to_owned())
                })
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// A maximum-rate workload's producers (perf, produce mode) against a sink that acknowledges
/// every request as soon as it has read it: how fast perf alone sends on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct PerfAlone {
    pub workload: String,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub perf_cpu_cores: f64,
    /// The sink's CPU over the run (the harness process), in cores.
    pub sink_cpu_cores: f64,
}

/// One perf run of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub workload: String,
    pub rep: usize,
    pub soak: bool,
    pub rate: Option<u64>,
    /// The fraction of the maximum a fixed-rate run ran at: its workload's `rate_of_max`, or a
    /// point of the latency curve; `None` for a maximum-rate run or a fixed rate in msg/s.
    pub load: Option<f64>,
    /// For a point of the latency curve, the workload it repeats at `load`.
    pub curve_of: Option<String>,
    /// Bytes the broker read from storage during the run's measured window, from the 1 s
    /// samples (0: every fetch came from memory).
    pub broker_read_bytes: u64,
    /// Fetch reads that missed the broker's batch cache and went to the log, over the whole
    /// perf run (warm-up included), from the broker's `/metrics`; None if it did not answer.
    pub broker_batch_cache_misses: Option<u64>,
    /// The broker's CPU use over the measured window, in cores.
    pub broker_cpu_cores: f64,
    /// Share of the measured window in which some runnable task on the machine (broker, perf or
    /// kernel) waited for a CPU (Linux PSI, `some`); None without PSI. Near 1, something was
    /// queued for a core all the time.
    pub cpu_pressure: Option<f64>,
    /// The machine's idle CPU over the measured window, in cores (idle and iowait, /proc/stat);
    /// None if it could not be read. The cores used by neither the broker, perf nor idleness
    /// went to the kernel's work for them outside both processes (network softirqs, the
    /// filesystem's I/O completion workers) and to anything else running.
    pub machine_idle_cores: Option<f64>,
    /// Share of the measured window in which the data directory's disk had requests in flight
    /// (`io_ticks` of /proc/diskstats); None if it could not be read. Near 1 the disk was never
    /// idle, which on a virtio disk does not yet mean it could take no more.
    pub disk_busy: Option<f64>,
    /// The broker's backlog of received requests over the measured window, from the 1 s
    /// samples of its connections' receive queues: the share of samples in which some bytes
    /// waited unread, and the median of the bytes waiting. None without samples.
    pub broker_unread: Option<Unread>,
    pub broker_rss_before_bytes: u64,
    pub broker_rss_after_bytes: u64,
    /// Start and end of the run on the broker's sample clock.
    pub broker_t_s: (f64, f64),
    /// The run's broker, sampled every second from its start.
    pub broker_samples: Vec<ProcSample>,
    /// The raw O_DIRECT append in MB/s, measured again just before a maximum-rate run (None for
    /// other runs, and if it failed). The report's append limit is the median of these and the
    /// one at the start.
    pub disk_append_mb_per_s: Option<f64>,
    /// perf's JSON report.
    pub perf: Value,
}

/// What the broker had received and not yet read, over a run's samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Unread {
    /// Share of the samples in which some bytes waited unread.
    pub share: f64,
    pub median_bytes: f64,
}

impl Unread {
    /// From the samples' unread byte counts; None without any.
    pub fn of(bytes: &[u64]) -> Option<Unread> {
        let median_bytes = median(bytes.iter().map(|&b| b as f64).collect())?;
        let waiting = bytes.iter().filter(|&&b| b > 0).count();
        Some(Unread {
            share: waiting as f64 / bytes.len() as f64,
            median_bytes,
        })
    }
}

impl Run {
    fn f(&self, pointer: &str) -> Option<f64> {
        self.perf.pointer(pointer).and_then(Value::as_f64)
    }

    /// The run's name in the report's lists: workload, soak or repetition.
    fn label(&self) -> String {
        if self.soak {
            format!("{} (soak)", self.workload)
        } else {
            format!("{} (rep {})", self.workload, self.rep + 1)
        }
    }
}

/// One line for each run whose consumers lost their position to retention and skipped
/// messages (perf's `consumer_offset_reset`): the tables' end-to-end latencies leave those
/// messages out, and a reader must know.
fn skip_lines(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .filter_map(|r| {
            let resets = r.f("/consumer_offset_resets").filter(|n| *n > 0.0)?;
            Some(format!(
                "**{}**: the consumers lost their position {resets:.0} time(s) to retention (OFFSET_OUT_OF_RANGE) and \
                 moved to the log's {}, skipping {:.0} messages. Its end-to-end latencies leave those messages out.",
                r.label(),
                match r.perf["workload"]["consumer_offset_reset"].as_str() {
                    Some("earliest") => "start",
                    _ => "end",
                },
                r.f("/skipped_messages").unwrap_or(0.0),
            ))
        })
        .collect()
}

/// A run's mean publish rate over its 1 s samples up to `until_s` (at least the first sample),
/// in MB/s; `None` without samples.
fn publish_until(r: &Run, until_s: f64) -> Option<f64> {
    let points = r.perf["series"].as_array()?;
    let rates: Vec<f64> = points
        .iter()
        .filter(|p| p["t_s"].as_f64().is_some_and(|t| t <= until_s.ceil().max(1.0)))
        .filter_map(|p| p["publish_mb_per_s"].as_f64())
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Another Kafka-compatible broker, run through the same workloads (a fixed rate at a fraction
/// of the maximum at that fraction of its own maximum).
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub name: String,
    /// The command line that started it, placeholders unexpanded.
    pub command: String,
    pub runs: Vec<Run>,
}

/// Everything one `bench-harness run` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunSet {
    pub machine: Machine,
    pub limits: Limits,
    pub runs: Vec<Run>,
    pub rdkafka: Vec<RdkafkaRun>,
    /// perf's producers alone against a sink that stores nothing, per maximum-rate workload.
    pub perf_alone: Vec<PerfAlone>,
    /// The same workloads against a peer broker, if one was given.
    pub peer: Option<Peer>,
    /// Runs that failed, with the error (a broker crash, a client error).
    pub failures: Vec<String>,
    pub command: String,
    pub reps: usize,
}

/// The middle value (the upper one of an even count); `None` for none.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn ms(us: Option<f64>) -> String {
    us.map_or("–".into(), |u| format!("{:.2}", u / 1000.0))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// A fraction as a whole percentage, or "–".
fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "**PASS**"
    } else {
        "**MISS**"
    }
}

/// Workload names in first-run order.
fn names(runs: &[Run]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in runs.iter().filter(|r| !r.soak) {
        if !v.contains(&r.workload) {
            v.push(r.workload.clone());
        }
    }
    v
}

/// The median over the non-soak reps of `name` of the value at `pointer`.
fn med(runs: &[Run], name: &str, pointer: &str) -> Option<f64> {
    median(
        runs.iter()
            .filter(|r| !r.soak && r.workload == name)
            .filter_map(|r| r.f(pointer))
            .collect(),
    )
}

fn med_of(runs: &[Run], name: &str, f: impl Fn(&Run) -> f64) -> Option<f64> {
    median(runs.iter().filter(|r| !r.soak && r.workload == name).map(f).collect())
}

/// The median of a figure over a workload's runs that have it.
fn med_some(runs: &[Run], name: &str, f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter(|r| !r.soak && r.workload == name).filter_map(f).collect())
}

/// Every raw O_DIRECT append measured in the run: at the start, and again just before each
/// maximum-rate run, ours and the peer's.
fn append_measurements(set: &RunSet) -> Vec<f64> {
    let peer_runs = set.peer.iter().flat_map(|p| &p.runs);
    std::iter::once(set.limits.disk_append_mb_per_s)
        .chain(set.runs.iter().chain(peer_runs).filter_map(|r| r.disk_append_mb_per_s))
        .collect()
}

fn med_misses(runs: &[Run], name: &str) -> Option<f64> {
    med_some(runs, name, |r| r.broker_batch_cache_misses.map(|m| m as f64))
}

/// Resident memory over a soak, in MiB: the median of the window after the settling minute, the
/// median of the last window, and the largest sample after the settling minute.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MemoryTrend {
    early_mib: f64,
    late_mib: f64,
    max_mib: f64,
}

impl MemoryTrend {
    fn growth(&self) -> f64 {
        self.late_mib / self.early_mib.max(1e-9) - 1.0
    }
}

/// `rss` is (seconds since the broker started, MiB); the soak ran from `t0` to `t1`. In a soak
/// shorter than two windows after settling, the windows overlap. `None` without samples in both.
fn memory_trend(rss: &[(f64, f64)], t0: f64, t1: f64) -> Option<MemoryTrend> {
    let settled = t0 + SOAK_SETTLE_S;
    let inside = |from: f64, to: f64| rss.iter().filter(move |(t, _)| *t >= from && *t <= to).map(|p| p.1);
    let early_mib = median(inside(settled, (settled + SOAK_MEMORY_WINDOW_S).min(t1)).collect())?;
    let late_mib = median(inside((t1 - SOAK_MEMORY_WINDOW_S).max(settled), t1).collect())?;
    let max_mib = inside(settled, t1).fold(0.0, f64::max);
    Some(MemoryTrend {
        early_mib,
        late_mib,
        max_mib,
    })
}

/// A run's latency by percentile from perf's report, as (nines, ms) points; empty if perf
/// measured none of that kind.
fn spectrum(r: &Run, key: &str) -> Vec<(f64, f64)> {
    r.perf[key]["spectrum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let q = p[0].as_f64()?;
                    let us = p[1].as_f64()?;
                    Some((if q >= 1.0 { 6.0 } else { nines(q) }, us / 1000.0))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ours beside the peer, workload by workload (medians of each side's reps).
fn peer_section(md: &mut String, ours: &[Run], peer: &Peer, names: &[String]) {
    let p = &peer.name;
    let _ = writeln!(md, "\n## Beside {p} on the same machine (perf, medians)\n");
    let _ = writeln!(
        md,
        "Each workload ran against a fresh {p} right after ours, through the same perf, started by `{}` on a free \
         port and a fresh directory. A fixed rate at a fraction of the maximum is that fraction of each broker's own \
         maximum in this run (target rates ours / {p}). Throughput ratio: ours over {p}; latency ratio: {p} over \
         ours (above 1, ours is faster). Broker CPU and memory are each broker process's own. What an \
         acknowledgement promises is each broker's own: ours answers acks=all after an fdatasync.\n",
        peer.command
    );
    let _ = writeln!(
        md,
        "| workload | target rate msg/s | publish msg/s, ours / {p} | ours / {p} | publish p50 ms, ours / {p} | publish p99 \
         ms, ours / {p} | {p} / ours | end-to-end p99 ms, ours / {p} | broker CPU cores, ours / {p} | resident MiB \
         at the end, ours / {p} | {p} publish errors |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pair = |a: String, b: String| format!("{a} / {b}");
    for n in names {
        if !peer.runs.iter().any(|r| &r.workload == n) {
            continue;
        }
        let both = |pointer: &str| (med(ours, n, pointer), med(&peer.runs, n, pointer));
        let (rate, peer_rate) = both("/target_rate_msg_per_s");
        let rate_of = |r: Option<f64>| r.filter(|r| *r > 0.0).map_or("max".into(), |r| format!("{r:.0}"));
        let rates = if rate == peer_rate {
            rate_of(rate)
        } else {
            pair(rate_of(rate), rate_of(peer_rate))
        };
        let (msg, peer_msg) = both("/publish/msg_per_s");
        let (p50, peer_p50) = both("/publish_latency/p50_us");
        let (p99, peer_p99) = both("/publish_latency/p99_us");
        let (e2e, peer_e2e) = both("/end_to_end_latency/p99_us");
        let cpu = |runs: &[Run]| med_of(runs, n, |r| r.broker_cpu_cores);
        let rss = |runs: &[Run]| med_of(runs, n, |r| r.broker_rss_after_bytes as f64 / 1048576.0);
        let ratio = |a: Option<f64>, b: Option<f64>| num(a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b), 2);
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rates,
            pair(num(msg, 0), num(peer_msg, 0)),
            ratio(msg, peer_msg),
            pair(ms(p50), ms(peer_p50)),
            pair(ms(p99), ms(peer_p99)),
            ratio(peer_p99, p99),
            pair(ms(e2e), ms(peer_e2e)),
            pair(num(cpu(ours), 2), num(cpu(&peer.runs), 2)),
            pair(num(rss(ours), 0), num(rss(&peer.runs), 0)),
            num(med(&peer.runs, n, "/publish_errors"), 0),
        );
    }
}

/// Writes the folder; returns the Markdown.
/// Whether perf or the broker set the pace of the maximum-rate workloads, from how long perf's
/// producers waited on the broker (a full window of requests in flight, or a socket the broker
/// had not drained), with the broker's unread receive queues beside it.
fn pace_section(md: &mut String, runs: &[Run], names: &[String], alone: &[PerfAlone], peer: Option<&str>) {
    let at_max: Vec<(&String, f64)> = names
        .iter()
        .filter(|n| med(runs, n, "/target_rate_msg_per_s").is_some_and(|r| r == 0.0))
        .filter_map(|n| Some((n, med(runs, n, "/producer_wait_fraction")?)))
        .collect();
    if at_max.is_empty() {
        return;
    }
    let who = peer.unwrap_or("the broker");
    let _ = writeln!(
        md,
        "\n### Who set the pace at maximum rate{}\n",
        peer.map(|p| format!(" ({p})")).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "perf's producers wait on {who} when their window of requests in flight is full or {who} has not drained \
         their socket. Waiting at least half the time, {who} set the pace; less, perf (producing, or waiting for a \
         core it shares with {who}) may have. Beside it, the receive queues of {who}'s client connections, sampled \
         each second (`/proc/net/tcp`): bytes perf had sent that {who} had not read yet. A request on its way shows \
         there too, so they do not decide alone. Medians over the repetitions. Where perf's producers waited \
         less, perf alone (Machine limits) says whether its own cost could have set the pace: sending at least \
         {PERF_HEADROOM_MIN}x as fast into a sink that stores nothing, it could not.\n"
    );
    for (n, waited) in at_max {
        let headroom = alone
            .iter()
            .find(|p| &p.workload == n)
            .zip(med(runs, n, "/publish/mb_per_s"))
            .map(|(p, mb)| (p.mb_per_s / mb.max(1e-9), p.mb_per_s));
        let verdict = match headroom {
            _ if waited >= 0.5 => format!("{who}, not perf, set the pace"),
            Some((x, mb)) if x >= PERF_HEADROOM_MIN => format!(
                "not perf's own cost: alone, into a sink, perf sent {x:.1}x as fast ({mb:.0} MB/s); here it shared \
                 the cores with {who}"
            ),
            Some((x, mb)) => {
                format!("perf may have set the pace, not {who}: alone, into a sink, it sent only {x:.1}x as fast ({mb:.0} MB/s)")
            }
            None => format!("perf may have set the pace, not {who}"),
        };
        let unread = match (
            med_some(runs, n, |r| r.broker_unread.map(|u| u.share)),
            med_some(runs, n, |r| r.broker_unread.map(|u| u.median_bytes)),
        ) {
            (Some(share), Some(bytes)) => format!(
                "; requests waited unread in {} of the samples, {} MB at the median",
                percent(Some(share)),
                num(Some(bytes / 1e6), 2)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "- {n}: perf's producers waited on {who} {} of the time{unread}: {verdict}.",
            percent(Some(waited))
        );
    }
}

/// "Latency by load": for each workload the latency curve repeated, one row per fraction of
/// the maximum (the workload's own and the curve's points, medians over repetitions), beside
/// the latency targets, and a plot of the percentiles against the load; with a peer that ran
/// the curve too, its table follows and its publish and end-to-end p99 join the plot.
fn curve_section(md: &mut String, set: &RunSet, out: &Path) -> Result<()> {
    let mut bases: Vec<&str> = Vec::new();
    for base in set.runs.iter().filter_map(|r| r.curve_of.as_deref()) {
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    for base in bases {
        let _ = writeln!(md, "\n## Latency by load: {base} (perf, medians)\n");
        let _ = writeln!(
            md,
            "The same workload at fractions of the maximum measured in the same repetition (`--latency-curve`), \
             each run against a broker of its own. Targets: publish p99 under {} ms and p99.9 under {} ms, end-to-end \
             p99 under {} ms.\n",
            TARGET_PUBLISH_P99_US_MAX / 1000,
            TARGET_PUBLISH_P999_US_MAX / 1000,
            TARGET_END_TO_END_P99_US_MAX / 1000
        );
        let mut series = curve_table(md, &set.runs, base, None);
        if let Some(peer) = set
            .peer
            .as_ref()
            .filter(|p| p.runs.iter().any(|r| r.curve_of.as_deref() == Some(base)))
        {
            let _ = writeln!(md, "\n{}, at the same fractions of its own maximum:\n", peer.name);
            let theirs = curve_table(md, &peer.runs, base, Some(&peer.name));
            // Its p99s only: eight lines would hide the comparison.
            series.extend(theirs.into_iter().filter(|s| s.name.contains("p99 ")));
        }
        let svg = render(
            &Chart {
                title: format!("{base}: latency by load (medians)"),
                x_label: "% of the maximum publish rate".into(),
                y_label: "latency (ms, log scale)".into(),
                x_ticks: None,
                log_y: true,
                hlines: vec![
                    (TARGET_PUBLISH_P99_US_MAX as f64 / 1000.0, "publish p99 target".into()),
                    (TARGET_END_TO_END_P99_US_MAX as f64 / 1000.0, "end-to-end p99 target".into()),
                ],
            },
            &series,
        );
        std::fs::write(out.join(format!("latency-by-load-{base}.svg")), svg)?;
        let _ = writeln!(md, "\n![{base} latency by load](latency-by-load-{base}.svg)");
    }
    Ok(())
}

/// One broker's rows of a latency curve, then the line saying up to which load every target
/// held; returns the plot's series (named after `peer` when it is one).
fn curve_table(md: &mut String, runs: &[Run], base: &str, peer: Option<&str>) -> Vec<Series> {
    let mut points: Vec<(f64, String)> = names(runs)
        .into_iter()
        .filter(|n| n == base || runs.iter().any(|r| &r.workload == n && r.curve_of.as_deref() == Some(base)))
        .filter_map(|n| Some((med_some(runs, &n, |r| r.load)?, n)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let who = peer.unwrap_or("broker");
    let _ = writeln!(
        md,
        "| share of the maximum | target rate msg/s | publish MB/s | publish p50 | p99 | p99.9 | request round trip p99 | end-to-end p99 | latency targets met | {who} CPU cores | perf CPU cores | a task waiting for a CPU | idle cores | disk busy |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    let mut series: Vec<Series> = ["publish p50", "publish p99", "publish p99.9", "end-to-end p99"]
        .iter()
        .map(|name| Series {
            name: match peer {
                Some(p) => format!("{name} ({p})"),
                None => (*name).into(),
            },
            points: vec![],
        })
        .collect();
    // The highest load up to which every point met every latency target, if the lowest did.
    let mut held_up_to: Option<f64> = None;
    let mut holding = true;
    for (load, n) in &points {
        let p = |q: &str| med(runs, n, &format!("/publish_latency/{q}"));
        let e2e = med(runs, n, "/end_to_end_latency/p99_us");
        let met = match (p("p99_us"), p("p999_us"), e2e) {
            (Some(p99), Some(p999), Some(e)) => Some(
                p99 < TARGET_PUBLISH_P99_US_MAX as f64
                    && p999 < TARGET_PUBLISH_P999_US_MAX as f64
                    && e < TARGET_END_TO_END_P99_US_MAX as f64,
            ),
            _ => None,
        };
        holding &= met == Some(true);
        if holding {
            held_up_to = Some(*load);
        }
        let met = match met {
            Some(true) => "all",
            Some(false) => "not all",
            None => "–",
        };
        let _ = writeln!(
            md,
            "| {:.0}% | {} | {} | {} | {} | {} | {} | {} | {met} | {} | {} | {} | {} | {} |",
            load * 100.0,
            num(med(runs, n, "/target_rate_msg_per_s"), 0),
            num(med(runs, n, "/publish/mb_per_s"), 1),
            ms(p("p50_us")),
            ms(p("p99_us")),
            ms(p("p999_us")),
            ms(med(runs, n, "/publish_round_trip_latency/p99_us")),
            ms(e2e),
            num(med_of(runs, n, |r| r.broker_cpu_cores), 2),
            num(med(runs, n, "/perf_cpu_cores"), 2),
            percent(med_some(runs, n, |r| r.cpu_pressure)),
            num(med_some(runs, n, |r| r.machine_idle_cores), 2),
            percent(med_some(runs, n, |r| r.disk_busy)),
        );
        for (s, v) in series.iter_mut().zip([p("p50_us"), p("p99_us"), p("p999_us"), e2e]) {
            if let Some(v) = v {
                s.points.push((load * 100.0, v / 1000.0));
            }
        }
    }
    let of = peer.map(|p| format!("{p}'s")).unwrap_or_else(|| "the".into());
    let _ = match held_up_to {
        Some(load) => writeln!(md, "\nEvery latency target held up to {:.0}% of {of} maximum.", load * 100.0),
        None => writeln!(md, "\nThe latency targets did not all hold at any of these loads."),
    };
    series
}

pub fn write(set: &RunSet, out: &Path) -> Result<String> {
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(set)?)?;
    let l = &set.limits;
    let m = &set.machine;
    // The disk's append limit for every ratio: the median of all its measurements in the run,
    // since one measurement of 3 s is noisy (see ARCHITECTURE.md).
    let appends = append_measurements(set);
    let append = median(appends.clone()).unwrap_or(l.disk_append_mb_per_s);
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark report\n");
    let _ = writeln!(md, "Command: `{}`\n", set.command);
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), {:.1} GiB memory, Linux {}; data directory on {}, I/O scheduler {}, O_DIRECT \
         alignment {} B ({}).\n",
        m.cores, m.cpu, m.memory_gib, m.kernel, m.filesystem, m.io_scheduler, l.alignment_bytes, l.alignment_source
    );
    let _ = writeln!(
        md,
        "Method: the release broker on a fresh data directory, one shard per core; perf (this repository's load generator, \
         Kafka protocol only) on the same machine, so broker and load generator share the cores. Idle cores are the \
         machine's idle time (idle and iowait in /proc/stat) over a run's measured window; what the broker, perf and \
         idleness leave of the cores went to kernel work outside both processes (network softirqs, the filesystem's I/O \
         completion workers). Figures are medians of {} \
         repetition(s) per workload, each metric separately; latencies count from each message's intended send time \
         (coordinated omission corrected at fixed rates). MB is 10^6 bytes of record values. The machine's limits below were \
         measured in this run, on the same disk, before the broker started; the raw append again just before each \
         maximum-rate run, and every share of the raw append below is of the median of its measurements.\n",
        set.reps
    );
    let _ = writeln!(md, "## Machine limits\n");
    let _ = writeln!(md, "| limit | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| O_DIRECT sequential append, {} KiB writes, {} in flight, preallocated as the log does | {:.0} MB/s |",
        l.disk_write_bytes / 1024,
        l.disk_depth,
        l.disk_append_mb_per_s
    );
    if appends.len() > 1 {
        let (low, high) = appends.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let _ = writeln!(
            md,
            "| the same append, measured {} times (at the start and just before each maximum-rate run): median (lowest–highest) | {append:.0} MB/s ({low:.0}–{high:.0}) |",
            appends.len()
        );
    }
    let _ = writeln!(
        md,
        "| O_DIRECT sequential read of that file, {} KiB reads, {} in flight | {:.0} MB/s |",
        l.disk_read_bytes / 1024,
        l.disk_read_depth,
        l.disk_read_mb_per_s
    );
    let _ = writeln!(
        md,
        "| both at once: append / read | {:.0} / {:.0} MB/s |",
        l.disk_mixed_append_mb_per_s, l.disk_mixed_read_mb_per_s
    );
    let _ = writeln!(
        md,
        "| write {} KiB + fdatasync, p50 / p99 / p99.9 | {} / {} / {} µs |",
        l.fdatasync_write_bytes / 1024,
        l.fdatasync_us_p50,
        l.fdatasync_us_p99,
        l.fdatasync_us_p999
    );
    let _ = writeln!(md, "| loopback TCP, one connection | {:.0} MB/s |", l.tcp_loopback_mb_per_s);
    let _ = writeln!(md, "| memcpy, 64 MiB buffers | {:.0} MB/s |", l.memcpy_mb_per_s);
    for p in &set.perf_alone {
        let _ = writeln!(
            md,
            "| perf alone: {}'s producers into a sink that stores nothing (perf {:.2} cores, sink {:.2}) | {:.0} MB/s |",
            p.workload, p.perf_cpu_cores, p.sink_cpu_cores, p.mb_per_s
        );
    }
    let _ = writeln!(md);

    if !set.failures.is_empty() {
        let _ = writeln!(md, "## Failed runs\n");
        let _ = writeln!(
            md,
            "These runs are missing from the figures below (each had a broker of its own):\n"
        );
        for f in &set.failures {
            let _ = writeln!(md, "- `{}`", f.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    let names = names(&set.runs);
    let _ = writeln!(md, "## Throughput (perf)\n");
    let _ = writeln!(
        md,
        "| workload | target rate msg/s | publish msg/s | publish MB/s | publish / disk append | consume MB/s | consume / loopback TCP | errors | broker disk reads MB | fetch reads missing the batch cache | broker CPU cores | perf CPU cores | a task waiting for a CPU | idle cores | disk busy | producers waiting on broker |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for n in &names {
        let pub_mb = med(&set.runs, n, "/publish/mb_per_s");
        let cons_mb = med(&set.runs, n, "/consume/mb_per_s");
        let rate = med(&set.runs, n, "/target_rate_msg_per_s").filter(|r| *r > 0.0);
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate.map_or("max".into(), |r| format!("{r:.0}")),
            num(med(&set.runs, n, "/publish/msg_per_s"), 0),
            num(pub_mb, 1),
            num(pub_mb.map(|v| v / append), 2),
            num(cons_mb, 1),
            num(cons_mb.map(|v| v / l.tcp_loopback_mb_per_s), 3),
            num(med(&set.runs, n, "/publish_errors"), 0),
            num(med_of(&set.runs, n, |r| r.broker_read_bytes as f64 / 1e6), 1),
            num(med_misses(&set.runs, n), 0),
            num(med_of(&set.runs, n, |r| r.broker_cpu_cores), 2),
            num(med(&set.runs, n, "/perf_cpu_cores"), 2),
            percent(med_some(&set.runs, n, |r| r.cpu_pressure)),
            num(med_some(&set.runs, n, |r| r.machine_idle_cores), 2),
            percent(med_some(&set.runs, n, |r| r.disk_busy)),
            percent(med(&set.runs, n, "/producer_wait_fraction")),
        );
    }
    pace_section(&mut md, &set.runs, &names, &set.perf_alone, None);
    if let Some(peer) = &set.peer {
        pace_section(&mut md, &peer.runs, &names, &set.perf_alone, Some(&peer.name));
    }
    let _ = writeln!(md, "\n## Latency (perf), ms\n");
    let _ = writeln!(
        md,
        "Publish latency runs from each message's intended send time to its acknowledgement. The request round \
         trip, also per message, runs from writing its produce request to the socket to reading the response: the \
         broker's part, with loopback TCP and the reader thread's wake-up. The difference is the producer's own \
         batching (linger) and queueing for an in-flight slot.\n"
    );
    let _ = writeln!(
        md,
        "| workload | publish p50 | p99 | p99.9 | p99.99 | max | publish p99 / fdatasync p99 | request round trip p50 | p99 | end-to-end p50 | p99 | p99.9 | p99.99 | max |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in &names {
        let p = |q: &str| med(&set.runs, n, &format!("/publish_latency/{q}"));
        let rt = |q: &str| med(&set.runs, n, &format!("/publish_round_trip_latency/{q}"));
        let e = |q: &str| med(&set.runs, n, &format!("/end_to_end_latency/{q}"));
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(p("p50_us")),
            ms(p("p99_us")),
            ms(p("p999_us")),
            ms(p("p9999_us")),
            ms(p("max_us")),
            num(p("p99_us").map(|v| v / l.fdatasync_us_p99.max(1) as f64), 1),
            ms(rt("p50_us")),
            ms(rt("p99_us")),
            ms(e("p50_us")),
            ms(e("p99_us")),
            ms(e("p999_us")),
            ms(e("p9999_us")),
            ms(e("max_us")),
        );
    }
    for line in skip_lines(&set.runs) {
        let _ = writeln!(md, "\n{line}");
    }
    curve_section(&mut md, set, out)?;
    let backlogs: Vec<&String> = names.iter().filter(|n| med(&set.runs, n, "/backlog/mb").is_some()).collect();
    if !backlogs.is_empty() {
        let _ = writeln!(md, "\n## Consumers starting behind (perf), medians\n");
        let _ = writeln!(
            md,
            "The consumers wait until the backlog is acknowledged, then read it from where producing began while the \
             producers go on at their rate. Read rate: the backlog's megabytes over the time the consumers took to read \
             as many messages as it held; the disk serves those reads beside the producers' writes, so both stand beside \
             the raw append and read run at once ({:.0} and {:.0} MB/s), as well as the raw read alone. Publish while \
             reading: the mean of the 1 s samples up to the end of the read.\n",
            l.disk_mixed_append_mb_per_s, l.disk_mixed_read_mb_per_s
        );
        let _ = writeln!(
            md,
            "| workload | backlog MB | built in s | read in s | read MB/s | read / raw read | read / raw read beside an append \
             | publish MB/s while reading | publish / raw append beside a read | consume MB/s over the run | publish MB/s \
             over the run |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for n in backlogs {
            // Per run, then the median: a run whose consumers never finished the backlog has none.
            let drain_mb = median(
                set.runs
                    .iter()
                    .filter(|r| !r.soak && &r.workload == n)
                    .filter_map(|r| Some(r.f("/backlog/mb")? / r.f("/backlog/drain_s")?.max(1e-9)))
                    .collect(),
            );
            let publish_reading = median(
                set.runs
                    .iter()
                    .filter(|r| !r.soak && &r.workload == n)
                    .filter_map(|r| publish_until(r, r.f("/backlog/drain_s")?))
                    .collect(),
            );
            let _ = writeln!(
                md,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(med(&set.runs, n, "/backlog/mb"), 0),
                num(med(&set.runs, n, "/backlog/build_s"), 1),
                num(med(&set.runs, n, "/backlog/drain_s"), 1),
                num(drain_mb, 0),
                num(drain_mb.map(|v| v / l.disk_read_mb_per_s), 2),
                num(drain_mb.map(|v| v / l.disk_mixed_read_mb_per_s), 2),
                num(publish_reading, 0),
                num(publish_reading.map(|v| v / l.disk_mixed_append_mb_per_s), 2),
                num(med(&set.runs, n, "/consume/mb_per_s"), 1),
                num(med(&set.runs, n, "/publish/mb_per_s"), 1),
            );
        }
    }
    if !set.rdkafka.is_empty() {
        let _ = writeln!(md, "\n## Produce through librdkafka (medians)\n");
        let _ = writeln!(
            md,
            "| workload | target rate msg/s | msg/s | MB/s | / disk append | publish p50 ms | p99 | p99.9 | p99.99 | max | errors |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for n in &names {
            let rs: Vec<&RdkafkaRun> = set.rdkafka.iter().filter(|r| &r.workload == n).collect();
            if rs.is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&RdkafkaRun) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let mb = m(&|r| r.mb_per_s);
            let rate = rs[0].target_rate_msg_per_s;
            let _ = writeln!(
                md,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if rate == 0 { "max".into() } else { rate.to_string() },
                num(m(&|r| r.msg_per_s), 0),
                num(mb, 1),
                num(mb.map(|v| v / append), 2),
                ms(m(&|r| r.publish_us_p50 as f64)),
                ms(m(&|r| r.publish_us_p99 as f64)),
                ms(m(&|r| r.publish_us_p999 as f64)),
                ms(m(&|r| r.publish_us_p9999 as f64)),
                ms(m(&|r| r.publish_us_max as f64)),
                num(m(&|r| r.errors as f64), 0),
            );
        }
    }

    if let Some(peer) = &set.peer {
        peer_section(&mut md, &set.runs, peer, &names);
    }

    // Targets (issue 5), for the shipped workloads when they ran.
    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(md, "| target | measured (median) | result |\n|---|---:|---|");
    if let Some(v) = med(&set.runs, "max-throughput", "/publish/mb_per_s") {
        let ratio = v / append;
        let _ = writeln!(
            md,
            "| max-throughput publish (acks=all) at least {TARGET_APPEND_RATIO_MIN:.2} of raw O_DIRECT append | {ratio:.2} ({v:.0} of {append:.0} MB/s) | {} |",
            pass(ratio >= TARGET_APPEND_RATIO_MIN)
        );
    }
    let fr = "fixed-rate-latency";
    let checks: [(&str, &str, u64); 3] = [
        ("publish p99", "/publish_latency/p99_us", TARGET_PUBLISH_P99_US_MAX),
        ("publish p99.9", "/publish_latency/p999_us", TARGET_PUBLISH_P999_US_MAX),
        ("end-to-end p99", "/end_to_end_latency/p99_us", TARGET_END_TO_END_P99_US_MAX),
    ];
    for (what, pointer, max) in checks {
        if let Some(v) = med(&set.runs, fr, pointer) {
            let _ = writeln!(
                md,
                "| {fr}: {what} under {} ms | {:.2} ms | {} |",
                max / 1000,
                v / 1000.0,
                pass(v < max as f64)
            );
        }
    }
    // Served from the batch cache: no fetch read went to the log. The process's `read_bytes`
    // is shown beside it; it also counts filesystem metadata the writes cause (a run with no
    // consumer at all reads some), so it decides only when the broker gave no miss count.
    if let Some(reads) = med_of(&set.runs, fr, |r| r.broker_read_bytes as f64) {
        let (measured, ok) = match med_misses(&set.runs, fr) {
            Some(misses) => (
                format!("{misses:.0} fetch reads missed the cache; {reads:.0} B `read_bytes`"),
                misses == 0.0,
            ),
            None => (format!("{reads:.0} B `read_bytes` (no miss count)"), reads == 0.0),
        };
        let _ = writeln!(
            md,
            "| {fr}: tailing consumers served from the batch cache without disk reads | {measured} | {} |",
            pass(ok)
        );
    }
    let rss_of = |r: &Run| -> Vec<(f64, f64)> { r.broker_samples.iter().map(|s| (s.t_s, s.rss_bytes as f64 / 1048576.0)).collect() };
    if let Some(soak) = set.runs.iter().find(|r| r.soak) {
        let (t0, t1) = soak.broker_t_s;
        if let Some(m) = memory_trend(&rss_of(soak), t0, t1) {
            let _ = writeln!(
                md,
                "| broker resident memory flat over a {:.0}-minute fixed-rate run (median of the minute after the first against the last minute's, growth under {:.0}%) | {:.0} → {:.0} MiB (max {:.0}), {:+.1}% | {} |",
                (t1 - t0) / 60.0,
                TARGET_MEMORY_GROWTH_MAX * 100.0,
                m.early_mib,
                m.late_mib,
                m.max_mib,
                m.growth() * 100.0,
                pass(m.growth() < TARGET_MEMORY_GROWTH_MAX)
            );
            if let Some(resets) = soak.f("/consumer_offset_resets").filter(|n| *n > 0.0) {
                let _ = writeln!(
                    md,
                    "\nThe soak's consumer fell behind retention {resets:.0} time(s) and skipped {:.0} messages \
                     (see under Latency).",
                    soak.f("/skipped_messages").unwrap_or(0.0)
                );
            }
        }
    } else {
        let _ = writeln!(
            md,
            "| broker resident memory flat over 10 minutes | not measured in this run (`--soak-minutes 10`) | – |"
        );
    }
    if let Some(reads) = med_of(&set.runs, "max-throughput", |r| r.broker_read_bytes as f64) {
        let _ = writeln!(
            md,
            "\nBroker `read_bytes` counts every storage read the process caused, filesystem metadata \
             included: max-throughput, with producers only and no reader, read {reads:.0} B."
        );
    }
    let _ = writeln!(
        md,
        "\nBroker resident memory at the end of each run (each run has its own broker), MiB: {}.",
        set.runs
            .iter()
            .map(|r| format!(
                "{}{} {:.0}",
                r.workload,
                if r.soak { " (soak)" } else { "" },
                r.broker_rss_after_bytes as f64 / 1048576.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Plots.
    let _ = writeln!(md, "\n## Plots\n");
    // A latency curve's points have their own plot (in "Latency by load").
    for n in names
        .iter()
        .filter(|n| !set.runs.iter().any(|r| &r.workload == *n && r.curve_of.is_some()))
    {
        let Some(r) = set.runs.iter().find(|r| !r.soak && &r.workload == n) else {
            continue;
        };
        let mut series = vec![Series {
            name: "publish".into(),
            points: spectrum(r, "publish_latency"),
        }];
        let e2e = spectrum(r, "end_to_end_latency");
        if !e2e.is_empty() {
            series.push(Series {
                name: "end-to-end".into(),
                points: e2e,
            });
        }
        let peer_run = set
            .peer
            .as_ref()
            .and_then(|p| Some((p.name.as_str(), p.runs.iter().find(|r| &r.workload == n)?)));
        if let Some((name, pr)) = peer_run {
            for (key, what) in [("publish_latency", "publish"), ("end_to_end_latency", "end-to-end")] {
                let points = spectrum(pr, key);
                if !points.is_empty() {
                    series.push(Series {
                        name: format!("{what} ({name})"),
                        points,
                    });
                }
            }
        }
        let mut hlines = vec![(l.fdatasync_us_p99 as f64 / 1000.0, "raw fdatasync p99".into())];
        if n == fr {
            hlines.push((TARGET_PUBLISH_P99_US_MAX as f64 / 1000.0, "publish p99 target".into()));
        }
        let svg = render(
            &Chart {
                title: format!("{n}: latency by percentile (rep 1)"),
                x_label: "percentile".into(),
                y_label: "latency (ms, log scale)".into(),
                x_ticks: Some(nines_ticks()),
                log_y: true,
                hlines,
            },
            &series,
        );
        std::fs::write(out.join(format!("latency-{n}.svg")), svg)?;
        let line = |r: &Run, key: &str| -> Vec<(f64, f64)> {
            r.perf["series"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| Some((p["t_s"].as_f64()?, p[key].as_f64()?))).collect())
                .unwrap_or_default()
        };
        let mut lines = vec![
            Series {
                name: "publish".into(),
                points: line(r, "publish_mb_per_s"),
            },
            Series {
                name: "consume".into(),
                points: line(r, "consume_mb_per_s"),
            },
        ];
        if let Some((name, pr)) = peer_run {
            lines.push(Series {
                name: format!("publish ({name})"),
                points: line(pr, "publish_mb_per_s"),
            });
        }
        let svg = render(
            &Chart {
                title: format!("{n}: throughput over time (rep 1)"),
                x_label: "seconds after warm-up".into(),
                y_label: "MB/s".into(),
                x_ticks: None,
                log_y: false,
                hlines: vec![(append, "raw O_DIRECT append".into())],
            },
            &lines,
        );
        std::fs::write(out.join(format!("throughput-{n}.svg")), svg)?;
        let _ = writeln!(md, "![{n} latency](latency-{n}.svg) ![{n} throughput](throughput-{n}.svg)\n");
    }
    let memory: Vec<Series> = set
        .runs
        .iter()
        .filter(|r| r.soak || r.rep == 0)
        .map(|r| Series {
            name: format!("{}{}", r.workload, if r.soak { " (soak)" } else { "" }),
            points: rss_of(r),
        })
        .collect();
    let svg = render(
        &Chart {
            title: "broker resident memory, one broker per run".into(),
            x_label: "seconds since the broker started".into(),
            y_label: "MiB".into(),
            x_ticks: None,
            log_y: false,
            hlines: vec![],
        },
        &memory,
    );
    std::fs::write(out.join("broker-memory.svg"), svg)?;
    let _ = writeln!(md, "![broker memory](broker-memory.svg)");
    std::fs::write(out.join("report.md"), &md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            dir: "/d".into(),
            alignment_bytes: 512,
            alignment_source: "test".into(),
            disk_write_bytes: 1 << 20,
            disk_depth: 4,
            disk_append_mb_per_s: 1000.0,
            disk_read_mb_per_s: 2000.0,
            disk_read_bytes: 512 * 1024,
            disk_read_depth: 16,
            disk_mixed_append_mb_per_s: 1200.0,
            disk_mixed_read_mb_per_s: 1600.0,
            fdatasync_write_bytes: 4096,
            fdatasync_us_p50: 400,
            fdatasync_us_p99: 2000,
            fdatasync_us_p999: 5000,
            tcp_loopback_mb_per_s: 4000.0,
            memcpy_mb_per_s: 10000.0,
        }
    }

    fn run(workload: &str, rep: usize, mb: f64, p99_us: u64, read_bytes: u64) -> Run {
        let lat = json!({"count": 10, "mean_us": 1.0, "p50_us": 100, "p99_us": p99_us, "p999_us": p99_us * 2,
                         "p9999_us": p99_us * 3, "max_us": p99_us * 4, "spectrum": [[0.5, 100], [0.99, p99_us], [1.0, p99_us * 4]]});
        let round_trip = json!({"count": 10, "mean_us": 1.0, "p50_us": 80, "p99_us": p99_us / 2, "p999_us": p99_us,
                                "p9999_us": p99_us, "max_us": p99_us, "spectrum": []});
        Run {
            workload: workload.into(),
            rep,
            soak: false,
            rate: None,
            load: None,
            curve_of: None,
            broker_read_bytes: read_bytes,
            broker_batch_cache_misses: Some(0),
            broker_cpu_cores: 1.0,
            cpu_pressure: Some(0.5),
            machine_idle_cores: Some(0.25),
            disk_busy: Some(0.4),
            broker_unread: None,
            broker_rss_before_bytes: 1 << 20,
            broker_rss_after_bytes: 1 << 20,
            broker_t_s: (0.0, 1.0),
            broker_samples: vec![],
            disk_append_mb_per_s: None,
            perf: json!({"publish": {"msg_per_s": mb * 1000.0, "mb_per_s": mb}, "consume": {"mb_per_s": mb},
                         "target_rate_msg_per_s": 0, "publish_errors": 0, "perf_cpu_cores": 0.5, "producer_wait_fraction": 0.9,
                         "publish_latency": lat, "publish_round_trip_latency": round_trip, "end_to_end_latency": lat,
                         "series": [{"t_s": 1.0, "publish_mb_per_s": mb, "consume_mb_per_s": mb}]}),
        }
    }

    /// Every Markdown table has as many cells in its delimiter row and in each body row as in
    /// its header: GitHub draws a table whose delimiter row is short as plain text.
    fn assert_tables_well_formed(md: &str) {
        let cells = |line: &str| line.trim().trim_start_matches('|').trim_end_matches('|').split('|').count();
        let lines: Vec<&str> = md.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].starts_with('|') {
                let header = cells(lines[i]);
                let mut j = i + 1;
                while j < lines.len() && lines[j].starts_with('|') {
                    assert_eq!(cells(lines[j]), header, "row {:?} under header {:?}", lines[j], lines[i]);
                    j += 1;
                }
                assert!(
                    j > i + 1 && lines[i + 1].contains("---"),
                    "a table without a delimiter row: {:?}",
                    lines[i]
                );
                i = j;
            } else {
                i += 1;
            }
        }
    }

    /// Our runs alone, as `bench-harness run` collects them.
    fn ours(dir: &Path, runs: Vec<Run>, reps: usize) -> RunSet {
        RunSet {
            machine: Machine::describe(dir),
            limits: limits(),
            runs,
            rdkafka: vec![],
            perf_alone: vec![],
            peer: None,
            failures: vec![],
            command: "bench-harness run".into(),
            reps,
        }
    }

    /// The report's line that starts with `prefix`.
    fn row<'a>(md: &'a str, prefix: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{md}"))
    }

    #[test]
    fn every_share_of_the_raw_append_is_of_the_median_of_its_measurements() {
        let dir = tempfile::tempdir().unwrap();
        // 1000 MB/s at the start; 1200, 1300 and 1400 just before the three repetitions: the
        // median of the four is 1300 (the upper middle). Against the start alone the median
        // repetition, 800 MB/s, would be 0.80 and pass.
        let mut runs = vec![];
        for (rep, (mb, before)) in [(700.0, 1200.0), (800.0, 1400.0), (900.0, 1300.0)].into_iter().enumerate() {
            let mut r = run("max-throughput", rep, mb, 1000, 0);
            r.disk_append_mb_per_s = Some(before);
            runs.push(r);
        }
        runs.push(run("fixed-rate-latency", 0, 325.0, 3000, 0));
        let md = write(&ours(dir.path(), runs, 3), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let again = row(&md, "| the same append, measured 4 times");
        assert!(again.ends_with("| 1300 MB/s (1000–1400) |"), "{again}");
        assert!(row(&md, "| max-throughput | max |").contains("| 800.0 | 0.62 |"), "{md}");
        assert!(row(&md, "| fixed-rate-latency |").contains("| 325.0 | 0.25 |"), "{md}");
        let target = row(&md, "| max-throughput publish (acks=all) at least 0.70");
        assert!(target.contains("| 0.62 (800 of 1300 MB/s) | **MISS** |"), "{target}");

        // The peer's measurements count too: the disk is the same.
        let mut set = ours(dir.path(), vec![run("max-throughput", 0, 700.0, 1000, 0)], 1);
        let mut theirs = run("max-throughput", 0, 100.0, 1000, 0);
        theirs.disk_append_mb_per_s = Some(900.0);
        set.peer = Some(Peer {
            name: "tansu".into(),
            command: "tansu".into(),
            runs: vec![theirs],
        });
        let md = write(&set, dir.path()).unwrap();
        assert!(
            row(&md, "| the same append, measured 2 times").ends_with("| 1000 MB/s (900–1000) |"),
            "{md}"
        );

        // With the start's measurement alone, no such row, and the share is of it.
        let md = write(&ours(dir.path(), vec![run("max-throughput", 0, 750.0, 1000, 0)], 1), dir.path()).unwrap();
        assert!(!md.contains("the same append, measured"), "{md}");
        let target = row(&md, "| max-throughput publish (acks=all) at least 0.70");
        assert!(target.contains("| 0.75 (750 of 1000 MB/s) | **PASS** |"), "{target}");
    }

    #[test]
    fn every_table_is_well_formed_and_throughput_shows_cpu_use() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            run("max-throughput", 0, 750.0, 1000, 0),
            run("fixed-rate-latency", 0, 375.0, 3000, 0),
        ];
        let md = write(&ours(dir.path(), runs, 1), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let row = row(&md, "| max-throughput | max |");
        // Broker 1.00 cores, perf 0.50, a task waiting for a CPU half the time, 0.25 cores idle,
        // the disk busy 40% of the time, producers 90%.
        assert!(row.ends_with("| 1.00 | 0.50 | 50% | 0.25 | 40% | 90% |"), "{row}");
    }

    #[test]
    fn a_latency_curve_lists_its_points_by_load_beside_the_targets() {
        let dir = tempfile::tempdir().unwrap();
        let point = |name: &str, rep, load: f64, p99_us| {
            let mut r = run(name, rep, 1000.0 * load, p99_us, 0);
            r.load = Some(load);
            if name != "fixed-rate-latency" {
                r.curve_of = Some("fixed-rate-latency".into());
            }
            r
        };
        // Two repetitions; the points ran after the workload, in the order given.
        let mut runs = vec![];
        for rep in 0..2 {
            runs.push(run("max-throughput", rep, 1000.0, 90_000, 0));
            runs.push(point("fixed-rate-latency", rep, 0.5, 12_000 + rep as u64));
            runs.push(point("fixed-rate-latency-75pct", rep, 0.75, 40_000));
            runs.push(point("fixed-rate-latency-10pct", rep, 0.1, 3_000));
        }
        let md = write(&ours(dir.path(), runs, 2), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let section = md.split("## Latency by load: fixed-rate-latency").nth(1).expect("the section");
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| ") && l.contains('%')).collect();
        assert_eq!(rows.len(), 3, "{section}");
        // By load, not by run order; p99.9 is twice p99 in these runs, end-to-end as publish.
        assert!(
            rows[0].starts_with("| 10% |") && rows[0].contains("| 3.00 | 6.00 |") && rows[0].contains("| all |"),
            "{}",
            rows[0]
        );
        assert!(rows[1].starts_with("| 50% |") && rows[1].contains("| not all |"), "{}", rows[1]);
        assert!(
            rows[2].starts_with("| 75% |") && rows[2].contains("| 40.00 | 80.00 |"),
            "{}",
            rows[2]
        );
        assert!(section.contains("Every latency target held up to 10% of the maximum."), "{section}");
        let svg = std::fs::read_to_string(dir.path().join("latency-by-load-fixed-rate-latency.svg")).unwrap();
        assert!(svg.contains("publish p99 target"), "{svg}");
        // The points have no plots of their own; the workload they repeat keeps its own.
        assert!(!dir.path().join("latency-fixed-rate-latency-10pct.svg").exists());
        assert!(dir.path().join("latency-fixed-rate-latency.svg").exists());

        // A peer's curve: its own table under ours, and its p99s in the same plot.
        let mut set = ours(
            dir.path(),
            vec![
                point("fixed-rate-latency", 0, 0.5, 12_000),
                point("fixed-rate-latency-10pct", 0, 0.1, 3_000),
            ],
            1,
        );
        set.peer = Some(Peer {
            name: "tansu".into(),
            command: "tansu".into(),
            runs: vec![
                point("fixed-rate-latency", 0, 0.5, 30_000),
                point("fixed-rate-latency-10pct", 0, 0.1, 6_000),
            ],
        });
        let md = write(&set, dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let section = md.split("## Latency by load: fixed-rate-latency").nth(1).expect("the section");
        let theirs = section
            .split("tansu, at the same fractions of its own maximum:")
            .nth(1)
            .expect("the peer's table");
        assert!(theirs.contains("| tansu CPU cores |"), "{theirs}");
        let rows: Vec<&str> = theirs.lines().filter(|l| l.starts_with("| ") && l.contains('%')).collect();
        assert!(
            rows[0].starts_with("| 10% |") && rows[0].contains("| 6.00 | 12.00 |") && rows[0].contains("| not all |"),
            "{}",
            rows[0]
        );
        assert!(
            theirs.contains("The latency targets did not all hold at any of these loads."),
            "{theirs}"
        );
        assert!(
            section.contains("Every latency target held up to 10% of the maximum."),
            "ours first: {section}"
        );
        let svg = std::fs::read_to_string(dir.path().join("latency-by-load-fixed-rate-latency.svg")).unwrap();
        assert!(
            svg.contains("publish p99 (tansu)") && svg.contains("end-to-end p99 (tansu)"),
            "{svg}"
        );
        assert!(!svg.contains("p99.9 (tansu)") && !svg.contains("p50 (tansu)"), "{svg}");

        // A miss at the lowest load: the targets held nowhere, whatever the points above it did.
        let runs = vec![
            run("max-throughput", 0, 1000.0, 90_000, 0),
            point("fixed-rate-latency", 0, 0.5, 3_000),
            point("fixed-rate-latency-10pct", 0, 0.1, 6_000),
        ];
        let md = write(&ours(dir.path(), runs, 1), dir.path()).unwrap();
        assert!(md.contains("The latency targets did not all hold at any of these loads."), "{md}");
    }

    #[test]
    fn the_report_says_whether_the_broker_or_perf_set_the_pace_at_maximum_rate() {
        let dir = tempfile::tempdir().unwrap();
        let paced = |name: &str, rep, waited: f64, unread: Option<(f64, f64)>| {
            let mut r = run(name, rep, 900.0, 1000, 0);
            r.perf["producer_wait_fraction"] = json!(waited);
            r.broker_unread = unread.map(|(share, median_bytes)| Unread { share, median_bytes });
            r
        };
        let runs = vec![
            // Waiting most of the time in 2 of 3 repetitions: the median is 0.6.
            paced("max-throughput", 0, 0.6, Some((0.8, 2e6))),
            paced("max-throughput", 1, 0.1, Some((0.1, 0.0))),
            paced("max-throughput", 2, 0.9, Some((0.9, 3e6))),
            // Unread bytes in most samples do not decide alone.
            paced("keyed", 0, 0.3, Some((0.7, 1e5))),
            paced("no-samples", 0, 0.7, None),
            // A fixed rate is paced by perf by design: no verdict.
            {
                let mut r = paced("fixed-rate-latency", 0, 0.0, Some((0.5, 1e5)));
                r.perf["target_rate_msg_per_s"] = json!(400_000);
                r
            },
        ];
        let md = write(&ours(dir.path(), runs, 3), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        assert!(!md.contains("- fixed-rate-latency:"), "{md}");
        let max = row(&md, "- max-throughput:");
        assert!(
            max.ends_with("waited on the broker 60% of the time; requests waited unread in 80% of the samples, 2.00 MB at the median: the broker, not perf, set the pace."),
            "{max}"
        );
        let keyed = row(&md, "- keyed:");
        assert!(
            keyed.ends_with("0.10 MB at the median: perf may have set the pace, not the broker."),
            "{keyed}"
        );
        let none = row(&md, "- no-samples:");
        assert!(
            none.ends_with("waited on the broker 70% of the time: the broker, not perf, set the pace."),
            "{none}"
        );
        // perf alone, into a sink: with room to spare, perf's own cost is cleared; without,
        // the verdict says how little room there was; waiting on the broker still decides first.
        let alone = |workload: &str, mb_per_s| PerfAlone {
            workload: workload.into(),
            msg_per_s: mb_per_s * 1000.0,
            mb_per_s,
            perf_cpu_cores: 1.0,
            sink_cpu_cores: 0.5,
        };
        let runs = vec![
            paced("keyed", 0, 0.3, None),
            paced("tight", 0, 0.3, None),
            paced("max-throughput", 0, 0.6, None),
        ];
        let mut set = ours(dir.path(), runs, 1);
        set.perf_alone = vec![alone("keyed", 2700.0), alone("tight", 1000.0), alone("max-throughput", 300.0)];
        let md = write(&set, dir.path()).unwrap();
        assert_tables_well_formed(&md);
        assert!(
            md.contains("| perf alone: keyed's producers into a sink that stores nothing (perf 1.00 cores, sink 0.50) | 2700 MB/s |"),
            "{md}"
        );
        let keyed = row(&md, "- keyed:");
        assert!(
            keyed.ends_with(
                "30% of the time: not perf's own cost: alone, into a sink, perf sent 3.0x as fast (2700 MB/s); here it \
                 shared the cores with the broker."
            ),
            "{keyed}"
        );
        let tight = row(&md, "- tight:");
        assert!(
            tight.ends_with("perf may have set the pace, not the broker: alone, into a sink, it sent only 1.1x as fast (1000 MB/s)."),
            "{tight}"
        );
        let max = row(&md, "- max-throughput:");
        assert!(max.ends_with("the broker, not perf, set the pace."), "{max}");

        // Without a maximum-rate run, no section.
        let mut fixed = run("fixed-rate-latency", 0, 900.0, 1000, 0);
        fixed.perf["target_rate_msg_per_s"] = json!(400_000);
        let md = write(&ours(dir.path(), vec![fixed], 1), dir.path()).unwrap();
        assert!(!md.contains("Who set the pace"), "{md}");
    }

    #[test]
    fn a_backlog_run_shows_its_read_rate_beside_the_raw_read() {
        let dir = tempfile::tempdir().unwrap();
        let with_backlog = |rep, drain_s: Option<f64>| {
            let mut r = run("backlog-drain", rep, 600.0, 1000, 0);
            r.perf["backlog"] = json!({"mb": 4000.0, "messages": 3_906_250, "build_s": 6.0, "drain_s": drain_s});
            // Publishing slows while the backlog is read: 300 MB/s until then, 900 after.
            let read_until = drain_s.unwrap_or(0.0).ceil();
            r.perf["series"] = (1..=10)
                .map(|t| json!({"t_s": t as f64, "publish_mb_per_s": if t as f64 <= read_until { 300.0 } else { 900.0 }}))
                .collect();
            r
        };
        // Read rates 1000, 500 and 800 MB/s; the fourth run never finished its backlog.
        let runs = vec![
            with_backlog(0, Some(4.0)),
            with_backlog(1, Some(8.0)),
            with_backlog(2, Some(5.0)),
            with_backlog(3, None),
            run("max-throughput", 0, 750.0, 1000, 0),
        ];
        let md = write(&ours(dir.path(), runs, 3), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let row = row(&md, "| backlog-drain | 4000 |");
        // Median read rate 800 MB/s: 0.40 of the 2000 MB/s raw read, 0.50 of the 1600 MB/s it
        // reads beside an append; median drain 5.0 s. Publish while reading 300 MB/s: 0.25 of the
        // 1200 MB/s raw append beside a read.
        assert!(row.contains("| 5.0 | 800 | 0.40 | 0.50 | 300 | 0.25 |"), "{row}");
        assert!(md.contains("| both at once: append / read | 1200 / 1600 MB/s |"), "{md}");
        assert!(
            md.contains("| O_DIRECT sequential read of that file, 512 KiB reads, 16 in flight | 2000 MB/s |"),
            "{md}"
        );
        assert!(
            !md.lines().any(|l| l.starts_with("| max-throughput | 0 |")),
            "only backlog runs get a row"
        );
    }

    #[test]
    fn a_peer_stands_beside_ours_with_medians_and_ratios() {
        let dir = tempfile::tempdir().unwrap();
        let with = |mut r: Run, rate: u64, cpu: f64, rss_mib: u64| {
            r.perf["target_rate_msg_per_s"] = json!(rate);
            r.broker_cpu_cores = cpu;
            r.broker_rss_after_bytes = rss_mib << 20;
            r
        };
        // Ours: medians 600 MB/s (600,000 msg/s), publish p99 4 ms. The peer, at a rate of its
        // own: 200,000 msg/s, p99 10 ms; its one fixed-rate run only, so the other workload gets
        // no row.
        let set = RunSet {
            machine: Machine::describe(dir.path()),
            limits: limits(),
            runs: vec![
                with(run("fixed-rate-latency", 0, 500.0, 3000, 0), 600_000, 1.0, 500),
                with(run("fixed-rate-latency", 1, 600.0, 4000, 0), 600_000, 1.2, 600),
                with(run("fixed-rate-latency", 2, 700.0, 5000, 0), 600_000, 1.4, 700),
                run("max-throughput", 0, 900.0, 9000, 0),
            ],
            rdkafka: vec![],
            perf_alone: vec![],
            peer: Some(Peer {
                name: "tansu".into(),
                command: "tansu broker --kafka-listener-url tcp://{addr}".into(),
                runs: vec![with(run("fixed-rate-latency", 0, 200.0, 10_000, 0), 100_000, 0.5, 40)],
            }),
            failures: vec![],
            command: "bench-harness run --peer ...".into(),
            reps: 3,
        };
        let md = write(&set, dir.path()).unwrap();
        assert_tables_well_formed(&md);
        assert!(md.contains("## Beside tansu on the same machine"), "{md}");
        assert!(md.contains("`tansu broker --kafka-listener-url tcp://{addr}`"), "{md}");
        let row = row(&md, "| fixed-rate-latency | 600000 / 100000 | 600000 / 200000 |");
        // Throughput 3.00 times the peer's; the peer's p99 2.50 times ours.
        assert_eq!(
            row,
            "| fixed-rate-latency | 600000 / 100000 | 600000 / 200000 | 3.00 | 0.10 / 0.10 | 4.00 / 10.00 | 2.50 | 4.00 / 10.00 \
             | 1.20 / 0.50 | 600 / 40 | 0 |"
        );
        assert!(
            !md.lines().any(|l| l.starts_with("| max-throughput | max | 900000 /")),
            "a workload the peer did not run has no row: {md}"
        );
        // The peer's percentiles are drawn beside ours.
        let svg = std::fs::read_to_string(dir.path().join("latency-fixed-rate-latency.svg")).unwrap();
        assert!(svg.contains("publish (tansu)"), "{svg}");
        let svg = std::fs::read_to_string(dir.path().join("throughput-fixed-rate-latency.svg")).unwrap();
        assert!(svg.contains("publish (tansu)") && svg.contains("consume"), "{svg}");
    }

    #[test]
    fn targets_use_medians_and_say_pass_or_miss() {
        let dir = tempfile::tempdir().unwrap();
        let set = RunSet {
            machine: Machine::describe(dir.path()),
            limits: limits(),
            // Medians: 750 MB/s (0.75 of the disk: PASS); publish p99 6 ms (MISS).
            runs: vec![
                run("max-throughput", 0, 100.0, 1000, 0),
                run("max-throughput", 1, 750.0, 1000, 0),
                run("max-throughput", 2, 800.0, 1000, 0),
                run("fixed-rate-latency", 0, 300.0, 6000, 0),
            ],
            rdkafka: vec![],
            perf_alone: vec![],
            peer: None,
            failures: vec!["keyed-rep1: broker crashed".into()],
            command: "bench-harness run".into(),
            reps: 3,
        };
        let md = write(&set, dir.path()).unwrap();
        assert_tables_well_formed(&md);
        let line = |needle: &str| {
            md.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in\n{md}"))
                .to_owned()
        };
        let t = line("of raw O_DIRECT append |");
        assert!(t.contains("0.75") && t.contains("PASS"), "{t}");
        let p = line("publish p99 under");
        assert!(p.contains("6.00 ms") && p.contains("MISS"), "{p}");
        // Latency row: publish p50 .. max, p99 over the fdatasync p99, then the round trip.
        let l = line("| fixed-rate-latency | 0.10 |");
        assert!(
            l.starts_with("| fixed-rate-latency | 0.10 | 6.00 | 12.00 | 18.00 | 24.00 | 3.0 | 0.08 | 3.00 |"),
            "{l}"
        );
        let r = line("without disk reads");
        assert!(r.contains("0 fetch reads missed") && r.contains("PASS"), "{r}");
        assert!(line("flat over 10 minutes").contains("not measured"));
        assert!(line("producers only and no reader").contains("read 0 B"));
        assert!(line("keyed-rep1").contains("broker crashed"), "failures are reported");
        for f in [
            "report.json",
            "report.md",
            "latency-max-throughput.svg",
            "throughput-fixed-rate-latency.svg",
            "broker-memory.svg",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }

        // A fetch read that missed the cache is a miss, whatever `read_bytes` says; without a
        // miss count, `read_bytes` decides.
        let mut missed = set.clone();
        missed.runs[3].broker_batch_cache_misses = Some(3);
        let md = write(&missed, dir.path()).unwrap();
        let r = md.lines().find(|l| l.contains("without disk reads")).unwrap();
        assert!(r.contains("3 fetch reads missed") && r.contains("MISS"), "{r}");
        let mut uncounted = set.clone();
        uncounted.runs[3].broker_batch_cache_misses = None;
        uncounted.runs[3].broker_read_bytes = 4096;
        let md = write(&uncounted, dir.path()).unwrap();
        let r = md.lines().find(|l| l.contains("without disk reads")).unwrap();
        assert!(r.contains("no miss count") && r.contains("MISS"), "{r}");
    }

    /// One sample a second for `minutes` from 10 s after the broker started, in MiB, from
    /// `f(second)`.
    fn samples(minutes: usize, f: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
        (0..=minutes * 60).map(|s| (10.0 + s as f64, f(s))).collect()
    }

    /// Flat at about 700 MiB with a swing to 890 every 7 s and at the very end: the last sample
    /// alone is 27% above the first one after the settling minute.
    fn flat_with_swings(s: usize) -> f64 {
        if s % 7 == 0 || s == 600 {
            890.0
        } else {
            700.0 + (s % 5) as f64
        }
    }

    /// A leak of 3% of the start a minute: the last minute sits about 24% above the second.
    fn leaking(s: usize) -> f64 {
        700.0 * (1.0 + 0.03 * s as f64 / 60.0)
    }

    #[test]
    fn the_memory_rule_compares_window_medians_so_one_sample_cannot_decide_it() {
        let m = memory_trend(&samples(10, flat_with_swings), 10.0, 610.0).unwrap();
        assert_eq!(m.max_mib, 890.0);
        assert!(m.growth().abs() < 0.01, "{m:?}");
        let m = memory_trend(&samples(10, leaking), 10.0, 610.0).unwrap();
        assert!(m.growth() > TARGET_MEMORY_GROWTH_MAX, "{m:?}");
        // Nothing sampled after the settling minute: no figure rather than a made-up one.
        assert_eq!(memory_trend(&samples(0, |_| 700.0), 10.0, 60.0), None);
    }

    #[test]
    fn the_soak_line_reports_the_window_medians() {
        let dir = tempfile::tempdir().unwrap();
        let soak = |f: fn(usize) -> f64| {
            let mut r = run("fixed-rate-latency", 0, 300.0, 1000, 0);
            r.soak = true;
            r.broker_t_s = (10.0, 610.0);
            r.broker_samples = samples(10, f)
                .into_iter()
                .map(|(t_s, mib)| ProcSample {
                    t_s,
                    rss_bytes: (mib * 1048576.0) as u64,
                    read_bytes: 0,
                    cpu_s: 0.0,
                    cpu_pressure_us: None,
                    machine_idle_s: None,
                    unread_bytes: None,
                    disk_busy_ms: None,
                })
                .collect();
            r
        };
        let set = |r: Run| RunSet {
            machine: Machine::describe(dir.path()),
            limits: limits(),
            runs: vec![r],
            rdkafka: vec![],
            perf_alone: vec![],
            peer: None,
            failures: vec![],
            command: "bench-harness run".into(),
            reps: 1,
        };
        let line = |r: Run| {
            let md = write(&set(r), dir.path()).unwrap();
            md.lines()
                .find(|l| l.contains("resident memory flat"))
                .expect("a memory line")
                .to_owned()
        };
        let flat = line(soak(flat_with_swings));
        assert!(flat.contains("702 → 702 MiB (max 890), +0.0%") && flat.contains("PASS"), "{flat}");
        let leak = line(soak(leaking));
        assert!(leak.contains("MISS"), "{leak}");
        // No resets: no word of them.
        let md = write(&set(soak(flat_with_swings)), dir.path()).unwrap();
        assert!(!md.contains("OFFSET_OUT_OF_RANGE") && !md.contains("fell behind retention"), "{md}");

        // A consumer that retention overtook is named with what it skipped, beside the memory
        // figure and under the latencies it is missing from.
        let mut r = soak(flat_with_swings);
        r.perf["consumer_offset_resets"] = json!(16);
        r.perf["skipped_messages"] = json!(123456);
        r.perf["workload"] = json!({"consumer_offset_reset": "latest"});
        let md = write(&set(r), dir.path()).unwrap();
        assert_tables_well_formed(&md);
        assert!(
            md.contains("The soak's consumer fell behind retention 16 time(s) and skipped 123456 messages"),
            "{md}"
        );
        assert!(
            md.contains(
                "**fixed-rate-latency (soak)**: the consumers lost their position 16 time(s) to retention \
                 (OFFSET_OUT_OF_RANGE) and moved to the log's end, skipping 123456 messages."
            ),
            "{md}"
        );
    }
}
