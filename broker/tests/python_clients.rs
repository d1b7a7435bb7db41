//! Compatibility with kafka-python, a client nobody here wrote: each test starts the real broker
//! and runs one case of `tests/python/clients_test.py` against it (codecs, acks, many
//! partitions, seeking, ListOffsets, the largest batch, a restart, pipelined Produce requests). The script checks content,
//! order per partition and exact counts; a failure shows its output and the broker's log.
//!
//! Needs python3 with kafka-python and its codec libraries: `scripts/ci-deps/20-kafka-python.sh`
//! and `scripts/ci-deps/21-kafka-python-codecs.sh` install them.

mod common;

use std::time::Duration;

use common::BrokerProcess;

/// Longest one case may run; the script bounds its own waits well below this.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients_test.py");

/// Runs `python3 clients_test.py <bootstrap> <case>` (see `common::run_python_case`).
fn run_case(broker: &BrokerProcess, case: &str) {
    let bootstrap = broker.bootstrap();
    let args = [std::ffi::OsStr::new(&bootstrap), std::ffi::OsStr::new(case)];
    common::run_python_case(broker, SCRIPT, &args, case, CASE_TIMEOUT);
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
