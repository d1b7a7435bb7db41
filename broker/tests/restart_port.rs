//! A broker restarted on its port right after it died starts, although connections of the dead
//! process still hold the port in TIME_WAIT.
//!
//! Regression test for two ways the start-up check that no other broker listens on the port
//! (a plain bind, SO_REUSEADDR only) refused a restart with "Address already in use", found by
//! rdkafka_clients.rs's kill -9 test about one run in twenty:
//! - The shards' listeners use SO_REUSEPORT alone, and connections they accepted inherit it, so
//!   while the dead broker's end of a connection sat in TIME_WAIT (up to a minute) the plain
//!   bind failed.
//! - The dead broker's listening socket outlives the process by a few milliseconds while the
//!   kernel tears down its io_uring rings, and still accepts connections meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::BrokerProcess;

/// ApiVersions v0 with a null client id: size, api key 18, version 0, correlation id 1.
const API_VERSIONS_V0: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];

#[test]
fn a_restart_binds_over_time_wait_left_by_the_dead_broker() {
    for stop in ["SIGKILL", "SIGTERM"] {
        let mut broker = BrokerProcess::start(&[]);
        let mut conn = TcpStream::connect(broker.bootstrap()).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // A round trip, so the broker has accepted the connection and owns its end.
        conn.write_all(&API_VERSIONS_V0).unwrap();
        let mut size = [0u8; 4];
        conn.read_exact(&mut size).expect("ApiVersions response");
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        conn.read_exact(&mut body).unwrap();

        if stop == "SIGKILL" {
            broker.kill();
        } else {
            broker.stop();
        }
        // The broker's end closed first; once ours closes too, its end waits in TIME_WAIT.
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        drop(conn);

        broker.restart();
        TcpStream::connect(broker.bootstrap()).unwrap_or_else(|e| panic!("after {stop}: restarted broker: {e}"));
    }
}
