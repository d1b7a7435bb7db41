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
