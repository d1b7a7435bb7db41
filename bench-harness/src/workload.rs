//! The few fields of a perf workload file the harness itself needs: its name, the message size
//! and rate (to resolve `rate_of_max`), and the producer settings the librdkafka driver mirrors.
//! perf owns the format and validates it (perf/src/workload.rs); the harness cannot use perf's
//! parser (siblings never depend on each other), so the defaults here repeat perf's.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    /// perf's mode: produce, consume or end-to-end (its default).
    #[serde(default = "end_to_end")]
    pub mode: String,
    pub partitions_per_topic: u32,
    pub message_size: usize,
    #[serde(default = "none")]
    pub key_distributor: String,
    #[serde(default = "key_space")]
    pub key_space: u64,
    #[serde(default)]
    pub producer_rate: u64,
    pub rate_of_max: Option<f64>,
    #[serde(default = "all")]
    pub acks: String,
    #[serde(default = "batch_bytes")]
    pub batch_bytes: usize,
    #[serde(default)]
    pub linger_ms: u64,
    #[serde(default = "none")]
    pub compression: String,
    #[serde(default)]
    pub warmup_s: u64,
    pub duration_s: u64,
}

fn none() -> String {
    "none".into()
}
fn end_to_end() -> String {
    "end-to-end".into()
}
fn all() -> String {
    "all".into()
}
fn key_space() -> u64 {
    1000
}
fn batch_bytes() -> usize {
    128 * 1024
}

impl WorkloadInfo {
    pub fn load(path: &Path) -> Result<WorkloadInfo> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// A maximum-rate workload.
    pub fn is_max_rate(&self) -> bool {
        self.producer_rate == 0 && self.rate_of_max.is_none()
    }

    /// Whether this workload's maximum anchors `other`'s `rate_of_max`: producers alone at
    /// the maximum rate, with the same message size and partition count.
    pub fn anchors(&self, other: &WorkloadInfo) -> bool {
        self.is_max_rate()
            && self.mode == "produce"
            && self.message_size == other.message_size
            && self.partitions_per_topic == other.partitions_per_topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_workloads_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                names.push(WorkloadInfo::load(&p).unwrap().name);
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "backlog-drain",
                "fixed-rate-latency",
                "keyed-small-batches",
                "max-end-to-end",
                "max-throughput",
                "thousand-partitions"
            ]
        );
    }

    #[test]
    fn the_fixed_rate_run_is_anchored_on_the_produce_maximum_alone() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let load = |f: &str| WorkloadInfo::load(&dir.join(f)).unwrap();
        let fixed = load("2-fixed-rate-latency.toml");
        assert!(load("1-max-throughput.toml").anchors(&fixed));
        for other in ["5-max-end-to-end.toml", "3-thousand-partitions.toml", "4-keyed-small-batches.toml"] {
            assert!(!load(other).anchors(&fixed), "{other}");
        }
    }
}
