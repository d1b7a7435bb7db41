//! The crate's one error type.

/// Everything that can go wrong in a run, with the context an operator needs to act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workload file is not valid TOML or does not match the format; the message names the
    /// key and its line.
    #[error("workload {origin}: {message}")]
    WorkloadParse { origin: String, message: String },
    /// A workload value is out of bounds.
    #[error("workload key `{key}` = {value}: {reason}")]
    Workload { key: &'static str, value: String, reason: String },
    /// A socket operation failed.
    #[error("{op} {addr}: {source}")]
    Io {
        op: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A request could not be encoded or a response decoded.
    #[error("{api}: {message}")]
    Protocol { api: &'static str, message: String },
    /// The broker answered with an error code where the run cannot go on.
    #[error("{api} for `{resource}`: broker error code {code}")]
    Broker { api: &'static str, resource: String, code: i16 },
    /// A record batch could not be built or walked.
    #[error("record batch: {0}")]
    Batch(String),
    /// A producer or consumer thread failed or panicked.
    #[error("{thread}: {message}")]
    Thread { thread: String, message: String },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
