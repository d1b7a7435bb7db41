//! Workload files: what a run does, in TOML, with fields modelled on the OpenMessaging
//! Benchmark's workload YAML (topics, partitionsPerTopic, messageSize, keyDistributor,
//! producersPerTopic, consumerPerSubscription, producerRate, testDurationMinutes, warm-up) plus
//! the producer settings OMB keeps in its driver file (acks, batch size, linger, compression).
//!
//! ```toml
//! name = "max-throughput-1kib-16p"
//! mode = "end-to-end"          # produce | consume | end-to-end
//! topics = 1
//! partitions_per_topic = 16
//! message_size = 1024          # bytes of value; the first 8 carry the intended send time
//! key_distributor = "none"     # none | round-robin | random
//! key_space = 1000             # distinct keys, for round-robin and random
//! producers_per_topic = 2
//! consumers_per_topic = 1      # partitions are split between them, no consumer group
//! producer_rate = 0            # messages/s over all producers; 0 = as fast as possible
//! # rate_of_max = 0.5          # or: this fraction of a maximum measured earlier (bench-harness)
//! acks = "all"                 # all | 1 | 0
//! batch_bytes = 131072
//! linger_ms = 1
//! compression = "none"         # none | gzip | snappy | lz4 | zstd
//! max_in_flight = 5            # requests in flight per connection
//! consumer_backlog_mb = 0      # end-to-end: consumers wait until this much is produced
//! consumer_offset_reset = "none" # none | earliest | latest: after OFFSET_OUT_OF_RANGE
//! warmup_s = 5
//! duration_s = 20
//!
//! [topic_config]               # optional: configs of the created topics
//! "retention.bytes" = "268435456"
//! ```
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every error
//! names the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::batch::Compression;
use crate::constants::{
    BATCH_BYTES_MAX, CLIENTS_PER_TOPIC_MAX, CONSUMER_BACKLOG_MB_MAX, DURATION_S_MAX, IN_FLIGHT_MAX, MESSAGE_BYTES_MAX, MESSAGE_BYTES_MIN,
    PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX,
};
use crate::{Error, Result};

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Producers only: publish throughput and latency.
    Produce,
    /// Producers fill the topics for `duration_s` first (not measured), then consumers read
    /// everything from the earliest offset: catch-up read throughput.
    Consume,
    /// Producers and tailing consumers together: publish and end-to-end latency.
    #[default]
    EndToEnd,
}

/// How record keys are chosen (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistributor {
    /// Null keys; batches fill one partition at a time (Kafka's sticky partitioner).
    #[default]
    None,
    /// Keys 0, 1, 2, ... modulo `key_space`; the partition is a hash of the key.
    RoundRobin,
    /// Uniformly random keys below `key_space`.
    Random,
}

/// What a consumer does when its position has left the log (OFFSET_OUT_OF_RANGE: retention
/// deleted the records it had not read yet), as Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetReset {
    /// The run fails: a benchmark whose consumer skipped messages measured less than it says.
    #[default]
    None,
    /// Go on from the log's first offset.
    Earliest,
    /// Go on from the log's end, where the producers are.
    Latest,
}

impl OffsetReset {
    /// The ListOffsets timestamp that finds the new position; `None` for no reset.
    pub fn list_offsets_timestamp(self) -> Option<i64> {
        match self {
            OffsetReset::None => None,
            OffsetReset::Earliest => Some(-2),
            OffsetReset::Latest => Some(-1),
        }
    }
}

fn one() -> u32 {
    1
}
fn key_space_default() -> u64 {
    1000
}
fn acks_default() -> String {
    "all".into()
}
fn batch_bytes_default() -> usize {
    128 * 1024
}
fn in_flight_default() -> usize {
    5
}

fn is_no_reset(r: &OffsetReset) -> bool {
    *r == OffsetReset::None
}

/// One workload file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "one")]
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size: usize,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    #[serde(default = "key_space_default")]
    pub key_space: u64,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    #[serde(default)]
    pub consumers_per_topic: u32,
    /// Messages per second over all producers; 0 means as fast as the broker takes them.
    #[serde(default)]
    pub producer_rate: u64,
    /// A fraction of a maximum rate measured earlier; whoever runs the workload resolves it into
    /// `producer_rate` (bench-harness: the maximum of the preceding max-rate workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_of_max: Option<f64>,
    #[serde(default = "acks_default")]
    pub acks: String,
    #[serde(default = "batch_bytes_default")]
    pub batch_bytes: usize,
    #[serde(default)]
    pub linger_ms: u64,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default = "in_flight_default")]
    pub max_in_flight: usize,
    /// End-to-end mode: the consumers wait (at the offsets where producing began) until this
    /// many megabytes (10^6 bytes of message values) are acknowledged, then read the backlog
    /// while the producers go on, and the warm-up and the measured window start then (OMB's
    /// `consumerBacklogSizeGB`). 0: consumers read from the start.
    #[serde(default)]
    pub consumer_backlog_mb: u64,
    /// Where a consumer goes on after OFFSET_OUT_OF_RANGE. The report counts the resets and
    /// the messages they skipped; those have no end-to-end latency.
    #[serde(default, skip_serializing_if = "is_no_reset")]
    pub consumer_offset_reset: OffsetReset,
    #[serde(default)]
    pub warmup_s: u64,
    pub duration_s: u64,
    /// Configs given to CreateTopics (e.g. retention for long runs), as Kafka names them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_config: BTreeMap<String, String>,
}

impl Workload {
    /// Parses and validates a workload; `origin` (a path) goes into error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Workload> {
        let w: Workload = toml::from_str(text).map_err(|e| Error::WorkloadParse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        w.validate()?;
        Ok(w)
    }

    /// Reads, parses and validates a workload file.
    pub fn load(path: &std::path::Path) -> Result<Workload> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::WorkloadParse {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Workload::parse(&text, &path.display().to_string())
    }

    /// The acks value on the wire: -1 for all.
    pub fn acks_code(&self) -> i16 {
        match self.acks.as_str() {
            "all" | "-1" => -1,
            "1" => 1,
            _ => 0,
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<()> {
        fn bad<T: std::fmt::Debug>(key: &'static str, value: T, reason: impl Into<String>) -> Result<()> {
            Err(Error::Workload {
                key,
                value: format!("{value:?}"),
                reason: reason.into(),
            })
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return bad(
                "name",
                &self.name,
                "must be non-empty ASCII letters, digits, '-', '_' or '.' (it prefixes topic names)",
            );
        }
        if !(1..=TOPICS_MAX).contains(&self.topics) {
            return bad("topics", self.topics, format!("must be between 1 and {TOPICS_MAX}"));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.partitions_per_topic) {
            return bad(
                "partitions_per_topic",
                self.partitions_per_topic,
                format!("must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
            );
        }
        if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_MAX).contains(&self.message_size) {
            return bad(
                "message_size",
                self.message_size,
                format!("must be between {MESSAGE_BYTES_MIN} (the send-time stamp) and {MESSAGE_BYTES_MAX}"),
            );
        }
        if self.key_distributor != KeyDistributor::None && self.key_space == 0 {
            return bad("key_space", self.key_space, "must be at least 1 when keys are used");
        }
        if self.producers_per_topic > CLIENTS_PER_TOPIC_MAX {
            return bad(
                "producers_per_topic",
                self.producers_per_topic,
                format!("must be at most {CLIENTS_PER_TOPIC_MAX}"),
            );
        }
        if self.consumers_per_topic > CLIENTS_PER_TOPIC_MAX {
            return bad(
                "consumers_per_topic",
                self.consumers_per_topic,
                format!("must be at most {CLIENTS_PER_TOPIC_MAX}"),
            );
        }
        if self.producers_per_topic == 0 {
            return bad(
                "producers_per_topic",
                0,
                "every mode needs producers (consume mode fills the topics first)",
            );
        }
        if matches!(self.mode, Mode::Consume | Mode::EndToEnd) && self.consumers_per_topic == 0 {
            return bad("consumers_per_topic", 0, format!("mode {:?} needs consumers", self.mode));
        }
        if let Some(f) = self.rate_of_max {
            if !(f > 0.0 && f <= 1.0) {
                return bad("rate_of_max", f, "must be in (0, 1]");
            }
            if self.producer_rate != 0 {
                return bad("rate_of_max", f, "give either producer_rate or rate_of_max, not both");
            }
        }
        if !matches!(self.acks.as_str(), "all" | "-1" | "1" | "0") {
            return bad("acks", &self.acks, "must be \"all\", \"1\" or \"0\"");
        }
        if self.batch_bytes < self.message_size.min(BATCH_BYTES_MAX) || self.batch_bytes > BATCH_BYTES_MAX {
            return bad(
                "batch_bytes",
                self.batch_bytes,
                format!("must hold one message and be at most {BATCH_BYTES_MAX}"),
            );
        }
        if self.linger_ms > 10_000 {
            return bad("linger_ms", self.linger_ms, "must be at most 10000");
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.max_in_flight) {
            return bad(
                "max_in_flight",
                self.max_in_flight,
                format!("must be between 1 and {IN_FLIGHT_MAX}"),
            );
        }
        if self.consumer_backlog_mb > 0 && self.mode != Mode::EndToEnd {
            return bad(
                "consumer_backlog_mb",
                self.consumer_backlog_mb,
                "only end-to-end mode has consumers to hold back",
            );
        }
        if self.consumer_offset_reset != OffsetReset::None && self.mode != Mode::EndToEnd {
            return bad(
                "consumer_offset_reset",
                self.consumer_offset_reset,
                "only end-to-end mode has tailing consumers that retention can overtake",
            );
        }
        if self.consumer_backlog_mb > CONSUMER_BACKLOG_MB_MAX {
            return bad(
                "consumer_backlog_mb",
                self.consumer_backlog_mb,
                format!("must be at most {CONSUMER_BACKLOG_MB_MAX}"),
            );
        }
        if self.duration_s == 0 || self.duration_s > DURATION_S_MAX {
            return bad("duration_s", self.duration_s, format!("must be between 1 and {DURATION_S_MAX}"));
        }
        if self.warmup_s > DURATION_S_MAX {
            return bad("warmup_s", self.warmup_s, format!("must be at most {DURATION_S_MAX}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
partitions_per_topic = 16
message_size = 1024
consumers_per_topic = 1
duration_s = 10
"#;

    fn err(text: &str) -> String {
        Workload::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_what_a_file_leaves_out() {
        let w = Workload::parse(GOOD, "test.toml").unwrap();
        assert_eq!(w.topics, 1);
        assert_eq!(w.mode, Mode::EndToEnd);
        assert_eq!(w.acks_code(), -1);
        assert_eq!(w.producers_per_topic, 1);
        assert_eq!(w.batch_bytes, 128 * 1024);
        assert_eq!(w.compression, Compression::None);
        assert_eq!(w.key_distributor, KeyDistributor::None);
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
name = "keyed"
mode = "produce"
topics = 2
partitions_per_topic = 1000
message_size = 100
key_distributor = "random"
key_space = 10
producers_per_topic = 2
producer_rate = 5000
acks = "1"
batch_bytes = 4096
linger_ms = 5
compression = "zstd"
max_in_flight = 1
warmup_s = 1
duration_s = 2

[topic_config]
"retention.bytes" = "1048576"
"#;
        let w = Workload::parse(text, "x").unwrap();
        assert_eq!(w.mode, Mode::Produce);
        assert_eq!(w.key_distributor, KeyDistributor::Random);
        assert_eq!(w.compression, Compression::Zstd);
        assert_eq!(w.acks_code(), 1);
        assert_eq!(w.producer_rate, 5000);
        assert_eq!(w.topic_config["retention.bytes"], "1048576");
    }

    #[test]
    fn a_backlog_needs_end_to_end_mode_and_a_bound() {
        let w = Workload::parse(&format!("{GOOD}consumer_backlog_mb = 4000\n"), "x").unwrap();
        assert_eq!(w.consumer_backlog_mb, 4000);
        let e = err(&format!("{GOOD}consumer_backlog_mb = 1\nmode = \"consume\"\n"));
        assert!(e.contains("`consumer_backlog_mb`") && e.contains("end-to-end"), "{e}");
        let e = err(&format!("{GOOD}consumer_backlog_mb = {}\n", CONSUMER_BACKLOG_MB_MAX + 1));
        assert!(e.contains("`consumer_backlog_mb`"), "{e}");
    }

    #[test]
    fn an_offset_reset_is_kafkas_and_only_for_tailing_consumers() {
        assert_eq!(Workload::parse(GOOD, "x").unwrap().consumer_offset_reset, OffsetReset::None);
        let w = Workload::parse(&format!("{GOOD}consumer_offset_reset = \"latest\"\n"), "x").unwrap();
        assert_eq!(w.consumer_offset_reset, OffsetReset::Latest);
        assert_eq!(w.consumer_offset_reset.list_offsets_timestamp(), Some(-1));
        assert_eq!(OffsetReset::Earliest.list_offsets_timestamp(), Some(-2));
        assert_eq!(OffsetReset::None.list_offsets_timestamp(), None);
        let e = err(&format!("{GOOD}consumer_offset_reset = \"smallest\"\n"));
        assert!(e.contains("consumer_offset_reset"), "{e}");
        let e = err(&format!("{GOOD}consumer_offset_reset = \"earliest\"\nmode = \"consume\"\n"));
        assert!(e.contains("`consumer_offset_reset`") && e.contains("end-to-end"), "{e}");
        // A workload without a reset writes none into perf's JSON, as before.
        let json = serde_json::to_value(Workload::parse(GOOD, "x").unwrap()).unwrap();
        assert!(json.get("consumer_offset_reset").is_none(), "{json}");
    }

    #[test]
    fn a_typo_is_an_error_naming_the_key() {
        let e = err(&format!("{GOOD}mesage_size = 3\n"));
        assert!(e.contains("mesage_size"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = err("name = \"t\"\npartitions_per_topic = 1\nduration_s = 1\n");
        assert!(e.contains("message_size"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = err(&GOOD.replace("message_size = 1024", "message_size = \"big\""));
        assert!(e.contains("message_size"), "{e}");
    }

    #[test]
    fn an_unknown_codec_names_the_key() {
        let e = err(&format!("{GOOD}compression = \"lz5\"\n"));
        assert!(e.contains("compression"), "{e}");
    }

    #[test]
    fn out_of_bounds_values_name_the_key() {
        let cases = [
            ("message_size = 1024", "message_size = 4", "message_size"),
            ("partitions_per_topic = 16", "partitions_per_topic = 0", "partitions_per_topic"),
            ("duration_s = 10", "duration_s = 0", "duration_s"),
            ("consumers_per_topic = 1", "consumers_per_topic = 0", "consumers_per_topic"),
            ("name = \"t\"", "name = \"a b\"", "name"),
        ];
        for (from, to, key) in cases {
            let e = err(&GOOD.replace(from, to));
            assert!(e.contains(&format!("`{key}`")), "{to}: {e}");
        }
        for (extra, key) in [
            ("acks = \"2\"", "acks"),
            ("batch_bytes = 100", "batch_bytes"),
            ("max_in_flight = 0", "max_in_flight"),
            ("rate_of_max = 1.5", "rate_of_max"),
            ("rate_of_max = 0.5\nproducer_rate = 10", "rate_of_max"),
            ("key_distributor = \"random\"\nkey_space = 0", "key_space"),
        ] {
            let e = err(&format!("{GOOD}{extra}\n"));
            assert!(e.contains(&format!("`{key}`")), "{extra}: {e}");
        }
    }

    #[test]
    fn the_shipped_workloads_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-harness/workloads");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4, "expected the four shipped workloads in {}", dir.display());
    }
}
