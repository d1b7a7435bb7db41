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
    #[error("{api} for `{resource}`: broker error {}", code_name(*code))]
    Broker { api: &'static str, resource: String, code: i16 },
    /// A record batch could not be built or walked.
    #[error("record batch: {0}")]
    Batch(String),
    /// A producer or consumer thread failed or panicked.
    #[error("{thread}: {message}")]
    Thread { thread: String, message: String },
}

/// Kafka's name for an error code with the code itself, as Kafka's documentation and tools
/// print it: `MESSAGE_TOO_LARGE (10)`; `UNKNOWN (n)` for a code this build does not know.
pub fn code_name(code: i16) -> String {
    use kafka_protocol::error::ResponseError;
    let name = match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(_)) => "UNKNOWN".to_owned(),
        // The variant's name in CamelCase, e.g. `MessageTooLarge`.
        Some(e) => {
            let camel = format!("{e:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    };
    format!("{name} ({code})")
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_kafka_names_them() {
        assert_eq!(code_name(10), "MESSAGE_TOO_LARGE (10)");
        assert_eq!(code_name(6), "NOT_LEADER_OR_FOLLOWER (6)");
        assert_eq!(code_name(-1), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(code_name(0), "NONE (0)");
        assert_eq!(code_name(i16::MAX), "UNKNOWN (32767)");
        let e = Error::Broker {
            api: "CreateTopics",
            resource: "t".into(),
            code: 36,
        };
        assert_eq!(e.to_string(), "CreateTopics for `t`: broker error TOPIC_ALREADY_EXISTS (36)");
    }
}
