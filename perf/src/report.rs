//! The result of a run: throughput, latency percentiles and a per-second series, as JSON for
//! machines and a short text summary for people.

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;
use crate::workload::Workload;

/// Messages and bytes over the measured window. MB means 10^6 bytes (of record values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn over(messages: u64, bytes: u64, seconds: f64) -> Throughput {
        let s = seconds.max(1e-9);
        Throughput {
            messages,
            bytes,
            msg_per_s: messages as f64 / s,
            mb_per_s: bytes as f64 / s / 1e6,
        }
    }
}

/// A backlog run: how far behind the consumers started, and how long reading it took while the
/// producers went on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    /// Megabytes (10^6 bytes of message values) acknowledged before the consumers started.
    pub mb: f64,
    pub messages: u64,
    /// Seconds the producers took to build it.
    pub build_s: f64,
    /// Seconds from the consumers' start until they had read as many messages as the backlog
    /// held; `None` if they had not by the end of the run, or skipped part of it after an
    /// offset reset first.
    pub drain_s: Option<f64>,
}

impl Backlog {
    /// The rate the backlog was read at, beside what the producers added meanwhile.
    pub fn drain_mb_per_s(&self) -> Option<f64> {
        self.drain_s.map(|s| self.mb / s.max(1e-9))
    }
}

/// One second of a run (after warm-up), for throughput-over-time plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the measured window began, at the end of this interval.
    pub t_s: f64,
    pub publish_msg_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msg_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_p99_us: Option<u64>,
    pub end_to_end_p99_us: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub workload: Workload,
    pub bootstrap: String,
    pub topics: Vec<String>,
    /// Messages per second asked of all producers together; 0 for maximum rate.
    pub target_rate_msg_per_s: u64,
    /// Length of the measured window (after warm-up; in consume mode, until the consumers
    /// caught up or the duration ended).
    pub measured_s: f64,
    /// Seconds from the start of the run (before its topics were created) to the start of the
    /// measured window: set-up, warm-up and, with a backlog, building it. With `measured_s` it
    /// places the window on another clock, such as the broker samples of bench-harness.
    #[serde(default)]
    pub measured_from_s: f64,
    pub publish: Throughput,
    pub consume: Throughput,
    /// Messages the broker refused (error codes in produce responses).
    pub publish_errors: u64,
    /// The first produce error seen, if any.
    pub first_error: Option<String>,
    /// From intended send time to acknowledgement.
    pub publish_latency: Option<Percentiles>,
    /// The broker's part of `publish_latency`: from writing each message's produce request to
    /// the socket to reading its response (acks 1 or all). The difference is the producer's
    /// own batching (linger) and queueing for an in-flight slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_round_trip_latency: Option<Percentiles>,
    /// From intended send time to receipt by a consumer (end-to-end mode only). With a
    /// backlog, the backlog's messages count too, from when they were sent.
    pub end_to_end_latency: Option<Percentiles>,
    /// The backlog the consumers started behind (`consumer_backlog_mb`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
    /// CPU time perf itself used during the measured window, in cores (1.0 = one core busy).
    pub perf_cpu_cores: f64,
    /// Share of the producers' time spent waiting for the broker: for an in-flight slot, or
    /// blocked on a socket whose send buffer the broker had not drained. Near 1 at maximum rate
    /// means the broker, not perf, set the pace.
    pub producer_wait_fraction: f64,
    /// Times a consumer's position left the log (OFFSET_OUT_OF_RANGE) and moved as the
    /// workload's `consumer_offset_reset` says, and the messages those moves skipped. Skipped
    /// messages have no end-to-end latency: the percentiles leave out the oldest messages.
    #[serde(default)]
    pub consumer_offset_resets: u64,
    #[serde(default)]
    pub skipped_messages: u64,
    pub series: Vec<Point>,
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl Report {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "workload {} ({:?}, {} topic(s) x {} partitions, {} B messages, acks={}, rate {})\n",
            self.workload.name,
            self.workload.mode,
            self.workload.topics,
            self.workload.partitions_per_topic,
            self.workload.message_size,
            self.workload.acks,
            if self.target_rate_msg_per_s == 0 {
                "max".to_owned()
            } else {
                format!("{} msg/s", self.target_rate_msg_per_s)
            }
        );
        s += &format!(
            "measured {:.1} s: publish {:.0} msg/s {:.1} MB/s, consume {:.0} msg/s {:.1} MB/s, errors {}\n",
            self.measured_s,
            self.publish.msg_per_s,
            self.publish.mb_per_s,
            self.consume.msg_per_s,
            self.consume.mb_per_s,
            self.publish_errors
        );
        for (name, p) in [
            ("publish", &self.publish_latency),
            ("publish round trip", &self.publish_round_trip_latency),
            ("end-to-end", &self.end_to_end_latency),
        ] {
            if let Some(p) = p {
                s += &format!(
                    "{name} latency: p50 {} p99 {} p99.9 {} p99.99 {} max {} ({} samples)\n",
                    ms(p.p50_us),
                    ms(p.p99_us),
                    ms(p.p999_us),
                    ms(p.p9999_us),
                    ms(p.max_us),
                    p.count
                );
            }
        }
        if let Some(b) = &self.backlog {
            s += &format!("backlog: {:.0} MB built in {:.1} s; ", b.mb, b.build_s);
            s += &match (b.drain_s, b.drain_mb_per_s()) {
                (Some(d), Some(r)) => format!("read in {d:.1} s ({r:.0} MB/s) while producing went on\n"),
                _ if self.skipped_messages > 0 => "not read: the consumers skipped past it after an offset reset\n".to_owned(),
                _ => "not read by the end of the run\n".to_owned(),
            };
        }
        s += &format!(
            "perf used {:.2} cores; producers waited for the broker {:.0}% of the time\n",
            self.perf_cpu_cores,
            self.producer_wait_fraction * 100.0
        );
        if self.consumer_offset_resets > 0 {
            s += &format!(
                "consumers lost their position {} time(s) (OFFSET_OUT_OF_RANGE) and skipped {} messages, which have no end-to-end latency\n",
                self.consumer_offset_resets, self.skipped_messages
            );
        }
        if let Some(e) = &self.first_error {
            s += &format!("first error: {e}\n");
        }
        s
    }
}
