//! The broker binary starts, serves kcat (librdkafka) end to end, stops on SIGTERM with exit
//! status 0, and keeps its data across the restart.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::BrokerProcess;

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (see .ci/run)");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kcat_round_trip_survives_a_clean_restart() {
    let mut broker = BrokerProcess::start(&[]);
    let b = broker.bootstrap();
    let input: String = (0..100).map(|i| format!("key-{i}:value-{i}\n")).collect();
    kcat(&["-P", "-b", &b, "-t", "smoke", "-K:", "-X", "acks=all"], Some(&input));
    let read = kcat(
        &["-C", "-b", &b, "-t", "smoke", "-o", "beginning", "-e", "-q", "-f", "%o %k %s\n"],
        None,
    );
    let expected: String = (0..100).map(|i| format!("{i} key-{i} value-{i}\n")).collect();
    assert_eq!(read, expected);

    broker.stop();
    broker.restart();
    let again = kcat(
        &["-C", "-b", &b, "-t", "smoke", "-o", "beginning", "-e", "-q", "-f", "%o %k %s\n"],
        None,
    );
    assert_eq!(again, expected, "data intact after restart");
    assert!(broker.problems().is_empty(), "warnings in the log: {:?}", broker.problems());
}

#[test]
fn auto_creation_can_be_switched_off_and_the_default_partition_count_set() {
    let off = BrokerProcess::start(&["--auto-create-topics", "false"]);
    let listing = kcat(&["-L", "-b", &off.bootstrap(), "-t", "nosuch", "-J"], None);
    assert!(listing.contains("\"error\":\"Broker: Unknown topic or partition\""), "{listing}");
    assert!(!off.data_dir.join("nosuch-0").exists());

    let on = BrokerProcess::start(&["--default-partitions", "3"]);
    let listing = kcat(&["-L", "-b", &on.bootstrap(), "-t", "made", "-J"], None);
    for p in 0..3 {
        assert!(
            listing.contains(&format!("{{\"partition\":{p},")),
            "partition {p} missing: {listing}"
        );
    }
    assert!(!listing.contains("{\"partition\":3,"), "{listing}");
}

#[test]
fn configuration_comes_from_a_toml_file_and_a_bad_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "default_partitions = 2\n[topic_defaults]\n\"retention.ms\" = 1000\n").unwrap();
    let broker = BrokerProcess::start(&["--config", file.to_str().unwrap()]);
    let listing = kcat(&["-L", "-b", &broker.bootstrap(), "-t", "fromfile", "-J"], None);
    assert!(
        listing.contains("{\"partition\":1,") && !listing.contains("{\"partition\":2,"),
        "{listing}"
    );

    std::fs::write(&file, "no_such_key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_such_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Environment variables are read too, and a bad one names its key as well.
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .env("BROKER_DEFAULT_PARTITIONS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`default_partitions`"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`listen`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
