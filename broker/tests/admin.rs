//! The admin APIs (DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DescribeCluster, DeleteRecords, OffsetForLeaderEpoch) driven by
//! kafka-python's KafkaAdminClient, a client nobody here wrote, against the real broker. Each
//! test runs one case of `tests/python/admin_test.py`, which checks the effects (directories
//! gone, segments rolled and deleted, log start moved, records readable) and not only error codes.
//!
//! Needs python3 with kafka-python (`scripts/ci-deps/20-kafka-python.sh`) and kcat
//! (`scripts/ci-deps/10-kcat.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::BrokerProcess;

/// Longest one case may run; the script bounds its own waits well below this.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/admin_test.py");

/// A broker whose retention runs every 100 ms (settable only in the config file), so retention
/// changes show within a test's patience. Returns the broker and the directory of its config.
fn start_broker() -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "retention_check_interval_ms = 100\nshards = 2\n").unwrap();
    let broker = BrokerProcess::start(&["--config", config.to_str().unwrap()]);
    (broker, dir)
}

/// Fails the test, not skips it, when the client is missing.
fn require_kafka_python() {
    let probe = Command::new("python3")
        .args(["-c", "import kafka; print(kafka.__version__)"])
        .output()
        .expect("python3 is installed (scripts/ci-deps/20-kafka-python.sh)");
    assert!(
        probe.status.success(),
        "kafka-python is not installed: run scripts/ci-deps/20-kafka-python.sh\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs `python3 admin_test.py <bootstrap> <data dir> <case>` (see `common::run_python_case`).
fn run_case(broker: &BrokerProcess, case: &str) {
    run_case_expecting(broker, case, &[]);
}

/// `run_case` for a case whose broker log must hold each of `expected` warnings, and no others.
fn run_case_expecting(broker: &BrokerProcess, case: &str, expected: &[&str]) {
    require_kafka_python();
    let bootstrap = broker.bootstrap();
    let args = [
        std::ffi::OsStr::new(&bootstrap),
        broker.data_dir.as_os_str(),
        std::ffi::OsStr::new(case),
    ];
    common::run_python_case_expecting(broker, SCRIPT, &args, case, CASE_TIMEOUT, expected);
}

fn case(name: &str) {
    let (broker, _config) = start_broker();
    run_case(&broker, name);
}

/// Partition directories (`<topic>-<n>`) of user topics under the data directory (not the
/// metadata or the internal committed-offsets topic).
fn partition_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with("__"))
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn delete_topics_removes_metadata_and_partition_directories() {
    let (mut broker, _config) = start_broker();
    run_case(&broker, "delete_topics");
    // A restart neither brings the deleted topics back nor trips over their absence.
    broker.stop();
    broker.restart();
    let dirs = partition_dirs(&broker.data_dir);
    let names: Vec<String> = dirs.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        vec!["doomed-0".to_owned()],
        "only the re-created topic's partition is on disk"
    );
    let meta = std::fs::read_to_string(broker.data_dir.join("__cluster_metadata/cluster.json")).unwrap();
    assert!(!meta.contains("by-id"), "{meta}");
}

#[test]
fn create_partitions_grows_a_topic_that_then_takes_records() {
    case("create_partitions");
}

#[test]
fn describe_alter_and_incrementally_alter_configs() {
    case("configs");
}

#[test]
fn config_changes_take_effect_on_open_partitions_without_restart() {
    case("config_effects");
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let (mut broker, _config) = start_broker();
    run_case(&broker, "delete_records");
    broker.stop();
    broker.restart();
    run_case(&broker, "delete_records_after_restart");
}

#[test]
fn describe_cluster_names_this_broker() {
    case("describe_cluster");
}

#[test]
fn kafka_python_admin_client_lists_and_describes_topics() {
    case("admin_client_describes_topics");
}

#[test]
fn offset_for_leader_epoch_answers_epoch_zero_with_the_high_watermark() {
    case("offset_for_leader_epoch");
}

/// A tmpfs of `bytes` holding the broker's data directory, unmounted on drop. Needs root, as CI
/// and these machines run.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(bytes: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a small tmpfs for the full-disk test needs root");
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: the broker may still hold a file for a moment after it exits.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn delete_topics_frees_a_full_disk() {
    let fs = SmallFs::new(48 * 1024 * 1024);
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("broker.toml");
    std::fs::write(&config, "shards = 2\n").unwrap();
    let mut broker = BrokerProcess::start_in(Some(fs.dir.path().join("data")), &["--config", config.to_str().unwrap()]);
    run_case_expecting(
        &broker,
        "delete_topics_on_full_disk",
        &[
            // The filler topic's append that found the disk full, and the broker's answer.
            "partition log poisoned",
            "partition storage failure",
            // CreateTopics may not use the reserve.
            "writing metadata failed",
            // DeleteTopics did.
            "disk full: the metadata write takes the reserved space",
        ],
    );
    broker.stop();
}

#[test]
fn a_partition_poisoned_by_a_full_disk_comes_back_when_space_frees() {
    let fs = SmallFs::new(48 * 1024 * 1024);
    let mut broker = BrokerProcess::start_in(Some(fs.dir.path().join("data")), &[]);
    run_case_expecting(
        &broker,
        "full_disk_partition_comes_back",
        &[
            // The append that found the disk full, and the broker's answers while it stayed full.
            "partition log poisoned",
            "partition storage failure",
            // DeleteTopics on the full disk.
            "disk full: the metadata write takes the reserved space",
            // The next append found room.
            "the disk has room again: reopening the partition a full disk poisoned",
        ],
    );
    broker.stop();
}
