//! Kafka topic configs the broker understands: names, defaults, validation, and how they map
//! onto a partition log's `LogConfig`.

use std::collections::BTreeMap;

use iouring_storage::LogConfig;

/// One supported topic config: its Kafka name and default.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every topic config this broker accepts. Others are refused with INVALID_CONFIG.
pub const DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        doc: "delete, compact, or compact,delete: compact keeps the latest record per key in sealed segments; without delete, retention deletes nothing",
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        doc: "how long compaction keeps a tombstone (a record with a null value) after its batch's newest timestamp",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        doc: "compact once the part of the sealed log not yet compacted is at least this share of it",
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        doc: "delete segments whose newest batch is older; -1 keeps forever",
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        doc: "delete oldest segments beyond this partition size; -1 for no limit",
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        doc: "roll the active segment at this size",
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        doc: "roll the active segment at this age",
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        doc: "largest record batch accepted",
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock",
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        doc: "bytes between sparse index entries",
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        doc: "accepted; one node today, so always met",
    },
];

pub fn def(name: &str) -> Option<&'static ConfigDef> {
    DEFS.iter().find(|d| d.name == name)
}

fn long(value: &str) -> Result<i64, String> {
    value.trim().parse::<i64>().map_err(|_| format!("`{value}` is not a number"))
}

/// Checks one config; the error says what is wrong with the value.
pub fn validate_one(name: &str, value: &str) -> Result<(), String> {
    let Some(_) = def(name) else {
        return Err(format!("unknown topic config `{name}`"));
    };
    let problem: Option<String> = match name {
        "cleanup.policy" => {
            let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
            parts.sort_unstable();
            parts.dedup();
            (parts.is_empty() || parts.iter().any(|p| *p != "delete" && *p != "compact"))
                .then(|| format!("`{value}` is not delete, compact or compact,delete"))
        }
        "retention.ms" | "retention.bytes" => (long(value)? < -1).then(|| "must be -1 or more".to_owned()),
        "delete.retention.ms" => (long(value)? < 0).then(|| "must be 0 or more".to_owned()),
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => None,
            _ => Some(format!("`{value}` is not a number between 0 and 1")),
        },
        "segment.bytes" => {
            let range = iouring_storage::constants::SEGMENT_BYTES_MIN as i64..=i32::MAX as i64;
            (!range.contains(&long(value)?)).then(|| format!("must be between {} and {}", range.start(), range.end()))
        }
        "segment.ms" | "min.insync.replicas" => (long(value)? < 1).then(|| "must be at least 1".to_owned()),
        "max.message.bytes" => {
            let range = iouring_storage::constants::BATCH_HEADER_BYTES as i64..=iouring_storage::constants::BATCH_BYTES_MAX as i64;
            (!range.contains(&long(value)?)).then(|| format!("must be between {} and {}", range.start(), range.end()))
        }
        "message.timestamp.type" => {
            (value != "CreateTime" && value != "LogAppendTime").then(|| format!("`{value}` is neither CreateTime nor LogAppendTime"))
        }
        "index.interval.bytes" => {
            let range = iouring_storage::constants::INDEX_INTERVAL_BYTES_MIN as i64..=i32::MAX as i64;
            (!range.contains(&long(value)?)).then(|| format!("must be at least {}", range.start()))
        }
        _ => None,
    };
    problem.map_or(Ok(()), Err)
}

/// The effective configs of a topic: defaults, then broker-wide overrides, then the topic's own.
#[derive(Debug, Clone)]
pub struct Effective {
    values: BTreeMap<&'static str, (String, Source)>,
}

/// Where an effective value comes from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    Broker,
    Topic,
}

impl Effective {
    pub fn resolve(broker_defaults: &[(String, String)], topic: &BTreeMap<String, String>) -> Effective {
        let mut values = BTreeMap::new();
        for d in DEFS {
            values.insert(d.name, (d.default.to_owned(), Source::Default));
        }
        for (k, v) in broker_defaults {
            if let Some(d) = def(k) {
                values.insert(d.name, (v.clone(), Source::Broker));
            }
        }
        for (k, v) in topic {
            if let Some(d) = def(k) {
                values.insert(d.name, (v.clone(), Source::Topic));
            }
        }
        Effective { values }
    }

    pub fn get(&self, name: &str) -> &str {
        &self.values.get(name).expect("every supported config has a value").0
    }

    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str, Source)> {
        self.values.iter().map(|(k, (v, s))| (*k, v.as_str(), *s))
    }

    fn number(&self, name: &str) -> i64 {
        self.get(name).trim().parse().expect("validated on the way in")
    }

    /// cleanup.policy includes compact.
    pub fn compacts(&self) -> bool {
        self.get("cleanup.policy").split(',').any(|p| p.trim() == "compact")
    }

    pub fn delete_retention_ms(&self) -> i64 {
        self.number("delete.retention.ms")
    }

    pub fn min_cleanable_dirty_ratio(&self) -> f64 {
        self.get("min.cleanable.dirty.ratio")
            .trim()
            .parse()
            .expect("validated on the way in")
    }

    pub fn log_append_time(&self) -> bool {
        self.get("message.timestamp.type") == "LogAppendTime"
    }

    pub fn max_message_bytes(&self) -> usize {
        self.number("max.message.bytes") as usize
    }

    /// The partition log configuration these topic configs mean. `dir` is filled by the shard.
    pub fn log_config(&self) -> LogConfig {
        let mut c = LogConfig::new("");
        let policy = self.get("cleanup.policy");
        let deletes = policy.split(',').any(|p| p.trim() == "delete");
        c.segment_bytes = self.number("segment.bytes") as u64;
        c.segment_ms = Some(self.number("segment.ms"));
        let retention_ms = self.number("retention.ms");
        let retention_bytes = self.number("retention.bytes");
        c.retention_ms = (deletes && retention_ms >= 0).then_some(retention_ms);
        c.retention_bytes = (deletes && retention_bytes >= 0).then_some(retention_bytes as u64);
        c.batch_bytes_max = (self.max_message_bytes()).min(c.segment_bytes as usize);
        c.index_interval_bytes = self.number("index.interval.bytes") as u32;
        // A small segment needs a small preallocation step and write buffer.
        c.preallocate_step_bytes = c.preallocate_step_bytes.min(c.segment_bytes.max(c.write_buffer_bytes as u64));
        if c.segment_bytes < c.write_buffer_bytes as u64 {
            c.write_buffer_bytes = iouring_storage::constants::WRITE_BUFFER_BYTES_MIN;
            c.preallocate_step_bytes = c.write_buffer_bytes as u64;
        }
        c
    }
}

/// The type DescribeConfigs (v3+) reports for a config, as Kafka numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// The type of a topic config.
pub fn config_type(name: &str) -> ConfigType {
    match name {
        "cleanup.policy" => ConfigType::List,
        "retention.ms" | "retention.bytes" | "segment.ms" | "delete.retention.ms" => ConfigType::Long,
        "min.cleanable.dirty.ratio" => ConfigType::Double,
        "segment.bytes" | "max.message.bytes" | "index.interval.bytes" | "min.insync.replicas" => ConfigType::Int,
        _ => ConfigType::String,
    }
}

/// Whether a config holds a comma-separated list (IncrementalAlterConfigs' APPEND and SUBTRACT
/// apply only to these).
pub fn is_list(name: &str) -> bool {
    config_type(name) == ConfigType::List
}

/// The broker-wide config that sets a topic config's default, by Kafka's name (the synonym
/// DescribeConfigs lists). `topic_defaults` in the broker's file uses the topic names.
pub fn broker_synonym(name: &str) -> &'static str {
    match name {
        "cleanup.policy" => "log.cleanup.policy",
        "retention.ms" => "log.retention.ms",
        "retention.bytes" => "log.retention.bytes",
        "delete.retention.ms" => "log.cleaner.delete.retention.ms",
        "min.cleanable.dirty.ratio" => "log.cleaner.min.cleanable.ratio",
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        "max.message.bytes" => "message.max.bytes",
        "message.timestamp.type" => "log.message.timestamp.type",
        "index.interval.bytes" => "log.index.interval.bytes",
        "min.insync.replicas" => "min.insync.replicas",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_values_override_broker_defaults_override_kafka_defaults() {
        let broker = vec![("retention.ms".to_owned(), "1000".to_owned())];
        let mut topic = BTreeMap::new();
        topic.insert("segment.bytes".to_owned(), "1048576".to_owned());
        let e = Effective::resolve(&broker, &topic);
        assert_eq!(e.get("retention.ms"), "1000");
        assert_eq!(e.get("segment.bytes"), "1048576");
        assert_eq!(e.get("cleanup.policy"), "delete");
        let c = e.log_config();
        assert_eq!(c.retention_ms, Some(1000));
        assert_eq!(c.segment_bytes, 1 << 20);
        c.validate().unwrap_or_else(|err| panic!("{err}"));
    }

    #[test]
    fn compact_only_turns_off_retention_deletes() {
        let mut topic = BTreeMap::new();
        topic.insert("cleanup.policy".to_owned(), "compact".to_owned());
        let c = Effective::resolve(&[], &topic).log_config();
        assert_eq!(c.retention_ms, None);
    }

    #[test]
    fn small_segments_still_make_a_valid_log_config() {
        let mut topic = BTreeMap::new();
        topic.insert("segment.bytes".to_owned(), "65536".to_owned());
        topic.insert("max.message.bytes".to_owned(), "1048588".to_owned());
        Effective::resolve(&[], &topic).log_config().validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(validate_one("retention.ms", "soon").is_err());
        assert!(validate_one("retention.ms", "-2").is_err());
        assert!(validate_one("segment.bytes", "100").is_err());
        assert!(validate_one("cleanup.policy", "shred").is_err());
        assert!(validate_one("message.timestamp.type", "Now").is_err());
        assert!(validate_one("no.such.config", "1").is_err());
        assert!(validate_one("cleanup.policy", "compact, delete").is_ok());
    }

    #[test]
    fn every_config_has_a_type_its_default_fits_and_a_broker_synonym() {
        for d in DEFS {
            assert!(broker_synonym(d.name).contains('.'), "{}", d.name);
            let fits = match config_type(d.name) {
                ConfigType::Int => d.default.parse::<i32>().is_ok(),
                ConfigType::Long => d.default.parse::<i64>().is_ok(),
                ConfigType::Double => d.default.parse::<f64>().is_ok(),
                ConfigType::Boolean => d.default.parse::<bool>().is_ok(),
                ConfigType::List => d.default.split(',').all(|v| !v.trim().is_empty()),
                ConfigType::String => !d.default.is_empty(),
            };
            assert!(fits, "default `{}` of {} is not a {:?}", d.default, d.name, config_type(d.name));
            assert!(validate_one(d.name, d.default).is_ok(), "{}", d.name);
        }
        assert!(is_list("cleanup.policy"));
        assert!(!is_list("retention.ms"));
    }
}
