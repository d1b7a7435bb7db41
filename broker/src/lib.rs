//! The Kafka-compatible broker: configuration, cluster metadata, the Kafka protocol and one
//! handler per API, on top of the thread-per-core `shard` runtime.
//!
//! Architecture invariant: only this crate knows the Kafka wire format and Kafka error codes.

pub mod admin_http;
pub mod alloc;
pub mod compaction;
pub mod config;
pub mod connection;
pub mod constants;
pub mod errors;
pub mod frame;
pub mod groups;
pub mod handlers;
pub mod internal;
pub mod metadata;
pub mod metrics;
pub mod otlp;
pub mod records;
pub mod server;
pub mod topic_config;
pub mod txn;
