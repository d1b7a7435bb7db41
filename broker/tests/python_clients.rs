//! Compatibility with kafka-python, a client nobody here wrote: each test starts the real broker
//! and runs one case of `tests/python/clients_test.py` against it (codecs, acks, many
//! partitions, seeking, ListOffsets, the largest batch, a restart, pipelined Produce requests). The script checks content,
//! order per partition and exact counts; a failure shows its output and the broker's log.
//!
//! Needs python3 with kafka-python and its codec libraries: `scripts/ci-deps/20-kafka-python.sh`
//! and `scripts/ci-deps/21-kafka-python-codecs.sh` install them.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BrokerProcess;

/// Longest one case may run; the script bounds its own waits well below this.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients_test.py");

/// Runs `python3 clients_test.py <bootstrap> <case>` and panics with its output (and the
/// broker's log) unless it exits 0 within `CASE_TIMEOUT`.
fn run_case(broker: &BrokerProcess, case: &str) {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing");
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(broker.bootstrap())
        .arg(case)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (see scripts/ci-deps/20-kafka-python.sh)");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let output = format!("--- stdout\n{stdout}--- stderr\n{stderr}--- broker log\n{}", broker.log());
    match status {
        None => panic!("kafka-python case `{case}` still running after {CASE_TIMEOUT:?}; killed it\n{output}"),
        Some(s) if !s.success() => panic!("kafka-python case `{case}` failed with {s}\n{output}"),
        Some(_) => {}
    }
    let problems = broker.problems();
    assert!(
        problems.is_empty(),
        "kafka-python case `{case}`: warnings in the broker log: {problems:#?}"
    );
}

/// One broker per case, so a failure names its case and cases run in parallel.
fn case(name: &str) {
    let broker = BrokerProcess::start(&[]);
    run_case(&broker, name);
}

#[test]
fn kafka_python_every_codec_with_keys_and_headers() {
    case("codecs");
}

#[test]
fn kafka_python_acks_0_1_all() {
    case("acks");
}

#[test]
fn kafka_python_keyed_records_over_100_partitions() {
    case("partitions");
}

#[test]
fn kafka_python_assign_and_seek() {
    case("seek");
}

#[test]
fn kafka_python_list_offsets() {
    case("offsets");
}

#[test]
fn kafka_python_largest_batch_and_one_byte_more() {
    case("large");
}

/// Regression: pipelined Produce requests were appended out of order on partitions that the
/// requests themselves opened (see `case_pipelined_order`).
#[test]
fn pipelined_produce_requests_keep_their_order_on_fresh_partitions() {
    case("pipelined_order");
}

#[test]
fn kafka_python_data_survives_a_clean_restart() {
    let mut broker = BrokerProcess::start(&[]);
    run_case(&broker, "restart_produce");
    broker.stop();
    broker.restart();
    run_case(&broker, "restart_consume");
}
