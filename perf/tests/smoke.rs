//! perf against the real broker binary: each mode runs for a second or two and every message
//! acknowledged must be consumed, with latencies recorded for each. Correctness only; timings
//! never decide these tests.
//!
//! The broker binary belongs to another crate, so `CARGO_BIN_EXE_broker` is not available here
//! (and perf must not depend on broker, not even for tests: it speaks only the Kafka protocol).
//! The test builds it with `cargo build -p broker` in this test's profile and runs it from the
//! same target directory; `BROKER_BIN` overrides that.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use perf::{Mode, Report, RunOptions, Workload};

/// The broker binary of this target directory, built (or found up to date) first.
fn broker_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BROKER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/smoke-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "broker", "--bin", "broker"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        build.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let status = build.status().expect("running cargo build -p broker");
    assert!(status.success(), "cargo build -p broker failed");
    let bin = profile_dir.join("broker");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

struct Broker {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// With `extra` flags after the defaults.
    fn start_with(extra: &[&str]) -> Broker {
        let bin = broker_binary();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let log = dir.path().join("broker.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&bin)
                // No admin listener: its default port would be shared by tests running at once.
                .args(["--listen", &addr, "--admin-listen", "off", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(extra)
                .env("RUST_LOG", "info")
                .stdout(Stdio::from(out.try_clone().unwrap()))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("start the broker");
            let mut b = Broker {
                child,
                addr,
                log,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let text = std::fs::read_to_string(&b.log).unwrap_or_default();
                if b.child.try_wait().unwrap().is_some() {
                    // Another test took the port between our probe and the broker's bind.
                    assert!(text.contains("cannot listen"), "broker exited during start-up:\n{text}");
                    break;
                }
                if text.contains("broker ready") && std::net::TcpStream::connect(&b.addr).is_ok() {
                    return b;
                }
                assert!(Instant::now() < deadline, "broker not ready after 60 s:\n{text}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no free port for the broker after 5 attempts");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workload(name: &str, mode: Mode, extra: &str) -> Workload {
    let text = format!(
        "name = \"{name}\"\npartitions_per_topic = 4\nmessage_size = 200\nproducers_per_topic = 2\n\
         consumers_per_topic = 2\nmode = \"{}\"\nduration_s = 1\n{extra}",
        match mode {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::EndToEnd => "end-to-end",
        }
    );
    Workload::parse(&text, name).unwrap()
}

fn run(b: &Broker, w: &Workload, rate: Option<u64>) -> Report {
    let opts = RunOptions {
        bootstrap: b.addr.clone(),
        progress: false,
        rate,
        delete_topics: true,
    };
    perf::run(w, &opts).unwrap_or_else(|e| panic!("{}: {e}\n{}", w.name, std::fs::read_to_string(&b.log).unwrap_or_default()))
}

fn assert_clean(r: &Report) {
    assert_eq!(r.publish_errors, 0, "{:?}", r.first_error);
    assert!(r.publish.messages > 0, "{}", r.summary());
    let publish = r.publish_latency.as_ref().expect("publish latencies");
    assert!(publish.count >= r.publish.messages, "a latency for every acknowledged message");
    // The request round trip is the part of each message's publish latency after its request
    // was written, so it has as many samples and is no longer at any percentile.
    let round_trip = r.publish_round_trip_latency.as_ref().expect("round-trip latencies");
    assert_eq!(round_trip.count, publish.count, "{}", r.summary());
    for (q, (rt, p)) in [
        (round_trip.p50_us, publish.p50_us),
        (round_trip.p99_us, publish.p99_us),
        (round_trip.max_us, publish.max_us),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(rt <= p, "round trip {rt} µs above publish {p} µs at quantile #{q}: {}", r.summary());
    }
}

#[test]
fn end_to_end_at_a_fixed_rate_consumes_everything_acknowledged() {
    let b = Broker::start();
    let r = run(&b, &workload("smoke-e2e", Mode::EndToEnd, "linger_ms = 1\n"), Some(2000));
    assert_clean(&r);
    let publish = r.publish_latency.as_ref().unwrap();
    let e2e = r.end_to_end_latency.as_ref().expect("end-to-end latencies");
    // Every acknowledged message is consumed and measured (the drain waits for them).
    assert_eq!(e2e.count, publish.count, "{}", r.summary());
    // 2,000 msg/s for 1 s: the pacer sends on schedule (generous bounds for a loaded machine).
    assert!((1000..=2100).contains(&publish.count), "{}", r.summary());
    assert_eq!(r.target_rate_msg_per_s, 2000);
    assert!(!r.series.is_empty());
}

/// perf reports where its measured window lies in the run, after set-up and warm-up: bench-harness
/// places the window on the broker's samples with it, and so leaves out the drain and the topics'
/// deletion after it.
#[test]
fn the_measured_window_starts_after_the_warm_up() {
    let b = Broker::start();
    let r = run(&b, &workload("smoke-window", Mode::Produce, "warmup_s = 1\n"), Some(2000));
    assert_clean(&r);
    assert!((1.0..10.0).contains(&r.measured_from_s), "window from {} s", r.measured_from_s);
    assert!((0.9..3.0).contains(&r.measured_s), "window of {} s", r.measured_s);
}

#[test]
fn keyed_compressed_max_rate_and_produce_only_runs_are_clean() {
    let b = Broker::start();
    for codec in ["zstd", "lz4", "gzip", "snappy"] {
        let w = workload(
            &format!("smoke-keyed-{codec}"),
            Mode::EndToEnd,
            &format!("key_distributor = \"random\"\nkey_space = 50\ncompression = \"{codec}\"\nbatch_bytes = 8192\n"),
        );
        let r = run(&b, &w, None);
        assert_clean(&r);
        let e2e = r.end_to_end_latency.as_ref().expect("end-to-end latencies");
        assert_eq!(e2e.count, r.publish_latency.as_ref().unwrap().count, "{codec}: {}", r.summary());
    }
    let r = run(&b, &workload("smoke-produce", Mode::Produce, "acks = \"1\"\n"), None);
    assert_clean(&r);
    assert!(r.end_to_end_latency.is_none());
    assert_eq!(r.consume.messages, 0);
}

#[test]
fn consume_mode_reads_back_the_whole_backlog() {
    let b = Broker::start();
    let r = run(&b, &workload("smoke-consume", Mode::Consume, ""), Some(5000));
    assert!(r.consume.messages > 0, "{}", r.summary());
    // Consume mode measures reading, not publishing: the backlog is everything the fill wrote.
    assert!(r.end_to_end_latency.is_none());
    assert!(r.consume.messages >= 2500, "{}", r.summary());
}

#[test]
fn a_backlog_run_holds_the_consumers_until_the_backlog_is_built_and_reads_it_all() {
    let b = Broker::start();
    // 1 MB of 200-byte values is 5,000 messages: built in about a second at 5,000 msg/s.
    let r = run(
        &b,
        &workload("smoke-backlog", Mode::EndToEnd, "consumer_backlog_mb = 1\n"),
        Some(5000),
    );
    assert_clean(&r);
    let backlog = r.backlog.as_ref().expect("a backlog report");
    assert!(backlog.messages >= 5000, "{}", r.summary());
    assert!(backlog.mb >= 1.0, "{}", r.summary());
    assert!(backlog.drain_s.is_some(), "read within the run: {}", r.summary());
    // The backlog's messages are measured from when they were sent: some waited the whole build.
    let e2e = r.end_to_end_latency.as_ref().expect("end-to-end latencies");
    assert!(e2e.max_us as f64 >= backlog.build_s * 1e6 * 0.5, "{}", r.summary());
    assert!(r.summary().contains("backlog:"), "{}", r.summary());
}

/// A consumer held back while 4 MB are produced into 2 partitions that keep about 256 KiB
/// each: retention deletes its position before it reads (`reset` is the workload's
/// `consumer_offset_reset`).
fn overtaken_by_retention(b: &Broker, reset: &str) -> perf::Result<Report> {
    let extra = format!(
        // Batches well under a segment: the broker refuses a batch larger than segment.bytes.
        "partitions_per_topic = 2\nmessage_size = 1000\nbatch_bytes = 16384\nconsumers_per_topic = 1\nconsumer_backlog_mb = 4\n\
         consumer_offset_reset = \"{reset}\"\n[topic_config]\n\"retention.bytes\" = \"262144\"\n\
         \"segment.bytes\" = \"65536\"\n"
    );
    // `workload` sets the partitions and message size first; TOML refuses a key twice.
    let text = format!("name = \"smoke-reset-{reset}\"\nproducers_per_topic = 1\nmode = \"end-to-end\"\nduration_s = 1\n{extra}");
    let w = Workload::parse(&text, "reset").unwrap();
    let opts = RunOptions {
        bootstrap: b.addr.clone(),
        progress: false,
        // 4 MB at 4 MB/s: a second of backlog, ten retention passes.
        rate: Some(4000),
        delete_topics: true,
    };
    perf::run(&w, &opts)
}

#[test]
fn a_consumer_overtaken_by_retention_fails_the_run_or_resets_and_counts_the_skipped() {
    let b = Broker::start_with(&["--retention-check-interval-ms", "100"]);

    // Without a reset, the run fails and says why: this set-up does lose the position.
    let e = overtaken_by_retention(&b, "none").expect_err("the consumer's offset was deleted");
    assert!(e.to_string().contains("OFFSET_OUT_OF_RANGE"), "{e}");

    let r = overtaken_by_retention(&b, "latest").unwrap_or_else(|e| panic!("{e}"));
    assert_clean(&r);
    let backlog = r.backlog.as_ref().expect("a backlog report");
    assert!(r.consumer_offset_resets >= 2, "each partition lost its position: {}", r.summary());
    // From the log's end, the backlog is skipped but for what arrived between the first
    // fetch and the reset; what the consumer read or skipped covers the backlog.
    assert!(r.skipped_messages >= backlog.messages / 2, "{}", r.summary());
    assert!(r.skipped_messages <= backlog.messages + r.publish.messages, "{}", r.summary());
    // Skipped is not read: no drain time, and the summary says why.
    assert_eq!(backlog.drain_s, None, "{}", r.summary());
    assert!(r.summary().contains("skipped past it"), "{}", r.summary());
    assert!(r.consume.messages > 0, "{}", r.summary());
    assert!(r.summary().contains("OFFSET_OUT_OF_RANGE"), "{}", r.summary());

    let r = overtaken_by_retention(&b, "earliest").unwrap_or_else(|e| panic!("{e}"));
    assert_clean(&r);
    let backlog = r.backlog.as_ref().expect("a backlog report");
    assert!(r.consumer_offset_resets >= 2, "{}", r.summary());
    assert!(r.skipped_messages > 0, "{}", r.summary());
    // From the log's start, what retention kept of the backlog is read, not skipped.
    assert!(r.skipped_messages < backlog.messages, "{}", r.summary());
    // Retention keeps at least 256 KiB a partition, 128 ms at 2,000 messages a second each:
    // the oldest message read waited at least that long.
    let e2e = r.end_to_end_latency.as_ref().expect("end-to-end latencies");
    assert!(e2e.max_us >= 100_000, "read retained messages: {}", r.summary());
}

#[test]
fn the_cli_writes_json() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(
        &file,
        "name = \"smoke-cli\"\npartitions_per_topic = 2\nmessage_size = 64\nconsumers_per_topic = 1\nduration_s = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perf"))
        .arg(&file)
        .args(["--bootstrap", &b.addr, "--rate", "500", "--json", "-", "--quiet", "--delete-topics"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Report = serde_json::from_slice(&out.stdout).expect("stdout is one JSON report");
    assert_clean(&r);
    assert_eq!(r.workload.name, "smoke-cli");

    // A bad workload is refused before any connection, naming the key.
    std::fs::write(
        &file,
        "name = \"x\"\npartitions_per_topic = 2\nmessage_size = 2\nconsumers_per_topic = 1\nduration_s = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perf"))
        .arg(&file)
        .args(["--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("message_size"));
}
