//! `perf`: a load generator that speaks the Kafka protocol to any Kafka-compatible endpoint.
//!
//! It produces with its own v2 record-batch builder (`batch`), consumes with plain fetches, and
//! measures throughput and publish and end-to-end latency in HDR histograms (`stats`). A run is
//! described by a workload file (`workload`) modelled on the OpenMessaging Benchmark's, and
//! driven by `run::run`, which returns a `report::Report` (also printable as JSON).
//!
//! Threads and blocking sockets, not an async runtime: one connection per producer or consumer
//! and leader, a bounded number of requests in flight on each, so that the generator stays cheap
//! enough not to be the bottleneck on a small machine.

pub mod batch;
pub mod client;
pub mod constants;
mod error;
pub mod keys;
pub mod report;
pub mod run;
pub mod stats;
pub mod workload;

pub use error::{Error, Result};
pub use report::Report;
pub use run::{run, RunOptions};
pub use workload::{Mode, OffsetReset, Workload};
