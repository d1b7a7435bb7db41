//! Broker configuration: defaults, then a TOML file, then environment variables, then flags.
//! Every bound is checked at start-up with an error that names the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;
use shard::constants::BATCH_CACHE_BYTES_PER_SHARD_DEFAULT;

/// Smallest batch cache a shard may be given: below it, a single large batch would not fit.
const BATCH_CACHE_BYTES_PER_SHARD_MIN: usize = 1024 * 1024;

/// Command line flags; each also reads an environment variable. Unset ones fall back to the
/// TOML file, then to the defaults.
#[derive(Debug, Parser, Default)]
#[command(name = "broker", about = "A Kafka-compatible broker on io_uring, one shard per core.")]
pub struct Flags {
    /// TOML config file.
    #[arg(long, env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the Kafka listener binds (default 127.0.0.1:9092).
    #[arg(long, env = "BROKER_LISTEN")]
    pub listen: Option<String>,
    /// host:port clients are told to connect to (default: the listen address).
    #[arg(long, env = "BROKER_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Directory for partitions and metadata (default ./data).
    #[arg(long, env = "BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards, one per core (default: every core).
    #[arg(long, env = "BROKER_SHARDS")]
    pub shards: Option<usize>,
    /// Create topics on first use by Metadata or Produce (default true).
    #[arg(long, env = "BROKER_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic (default 1).
    #[arg(long, env = "BROKER_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// Log format: text or json (default text).
    #[arg(long, env = "BROKER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// How long a new consumer group waits for more members before its first rebalance
    /// (`group.initial.rebalance.delay.ms`, default 3000).
    #[arg(long, env = "BROKER_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Shortest session timeout a group member may ask for (`group.min.session.timeout.ms`,
    /// default 6000).
    #[arg(long, env = "BROKER_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// How often each shard looks for compacted partitions to clean (default 15000, Kafka's
    /// log.cleaner.backoff.ms).
    #[arg(long, env = "BROKER_COMPACTION_CHECK_INTERVAL_MS")]
    pub compaction_check_interval_ms: Option<u64>,
    /// How often each shard applies retention (default 300000, Kafka's
    /// log.retention.check.interval.ms).
    #[arg(long, env = "BROKER_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Memory for recently appended batches that tailing consumers read without touching the
    /// disk, for the whole broker, shared evenly by the shards (default 256 MiB per shard).
    #[arg(long, env = "BROKER_BATCH_CACHE_BYTES")]
    pub batch_cache_bytes: Option<u64>,
    /// Address of the admin HTTP listener serving /metrics, /health and /ready
    /// (default 127.0.0.1:9644; `off` turns it off).
    #[arg(long, env = "BROKER_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Record metrics (default true).
    #[arg(long, env = "BROKER_METRICS_ENABLED")]
    pub metrics_enabled: Option<bool>,
    /// Export request traces to this OpenTelemetry collector, `http://host:port[/v1/traces]`
    /// (OTLP/HTTP, JSON); default off.
    #[arg(long, env = "BROKER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The TOML file: the same keys, snake_case; unknown keys are an error.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub advertised_listener: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<usize>,
    pub pin_shards: Option<bool>,
    pub node_id: Option<i32>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<i32>,
    pub request_bytes_max: Option<usize>,
    pub requests_in_flight_max: Option<usize>,
    pub connections_max: Option<usize>,
    pub connections_max_idle_ms: Option<u64>,
    pub fetch_bytes_max: Option<usize>,
    pub retention_check_interval_ms: Option<u64>,
    pub compaction_check_interval_ms: Option<u64>,
    pub batch_cache_bytes: Option<u64>,
    pub segment_recycling: Option<bool>,
    /// `segment` (an fdatasync per partition commit) or `filesystem` (one syncfs per core for
    /// all its partitions' commits).
    pub log_sync: Option<String>,
    pub log_format: Option<String>,
    pub offsets_topic_partitions: Option<i32>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub group_min_session_timeout_ms: Option<i32>,
    pub group_max_session_timeout_ms: Option<i32>,
    pub offset_metadata_max_bytes: Option<usize>,
    pub transaction_state_partitions: Option<i32>,
    pub transaction_max_timeout_ms: Option<i32>,
    pub admin_listen: Option<String>,
    pub metrics_enabled: Option<bool>,
    pub otlp_endpoint: Option<String>,
    /// Broker-wide defaults for topic configs, with Kafka's names (`retention.ms`, ...).
    #[serde(default)]
    pub topic_defaults: std::collections::BTreeMap<String, toml::Value>,
}

/// The validated configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub pin_shards: bool,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub request_bytes_max: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    pub requests_in_flight_max: usize,
    pub connections_max: usize,
    /// A connection that sends nothing for this long is closed (`connections.max.idle.ms`),
    /// also in the middle of a frame.
    pub connections_max_idle_ms: u64,
    /// Most record bytes one fetch response carries, whatever the client asks
    /// (`fetch.max.bytes`).
    pub fetch_bytes_max: usize,
    pub retention_check_interval_ms: u64,
    pub compaction_check_interval_ms: u64,
    /// Each shard's share of the batch cache (`batch_cache_bytes` over the shards).
    pub batch_cache_bytes_per_shard: usize,
    /// Each partition keeps one segment file that retention deleted and reuses it as its next
    /// segment (default true; see `iouring_storage::LogConfig::recycle_segments`). Costs up
    /// to one segment of disk per partition beyond what retention keeps.
    pub segment_recycling: bool,
    /// What a partition's commit syncs (default the segment; see
    /// `iouring_storage::SyncScope`). `filesystem` shares one syncfs among a core's partitions,
    /// and suits a data directory with a filesystem of its own.
    pub log_sync: iouring_storage::SyncScope,
    pub log_json: bool,
    /// The admin HTTP listener (/metrics, /health, /ready); `None` when turned off.
    pub admin_listen: Option<SocketAddr>,
    /// Whether metrics are recorded; off, no recorder is installed and `/metrics` answers 404.
    pub metrics_enabled: bool,
    /// Where request traces go; `None` (the default) exports nothing.
    pub otlp_endpoint: Option<crate::otlp::Endpoint>,
    /// Topic config defaults given in the file, as strings, checked like topic configs.
    pub topic_defaults: Vec<(String, String)>,
    /// The group coordinator's settings.
    pub groups: crate::groups::GroupConfig,
    /// The transaction coordinator's settings.
    pub txns: crate::txn::TxnConfig,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    /// Merges flags (and their environment variables) over the file over the defaults.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| bad("config", format!("reading {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| bad("config", format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        Self::merge(flags, file)
    }

    pub fn merge(flags: Flags, file: FileConfig) -> Result<Config, ConfigError> {
        let listen_text = flags.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:9092".to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|e| bad("listen", format!("`{listen_text}` is not host:port: {e}")))?;
        let advertised = flags
            .advertised_listener
            .or(file.advertised_listener)
            .unwrap_or_else(|| listen.to_string());
        let (host, port) = advertised
            .rsplit_once(':')
            .ok_or_else(|| bad("advertised_listener", format!("`{advertised}` is not host:port")))?;
        let advertised_port: u16 = port
            .parse()
            .map_err(|_| bad("advertised_listener", format!("port `{port}` is not a number")))?;
        if host.is_empty() {
            return Err(bad("advertised_listener", "host is empty"));
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let shards = flags.shards.or(file.shards).unwrap_or(0);
        let shards = if shards == 0 { cores } else { shards };
        if shards > 1024 {
            return Err(bad("shards", format!("{shards} is more than 1024")));
        }
        let pin_shards = file.pin_shards.unwrap_or(shards <= cores);
        if pin_shards && shards > cores {
            return Err(bad("pin_shards", format!("cannot pin {shards} shards on {cores} cores")));
        }
        let default_partitions = flags.default_partitions.or(file.default_partitions).unwrap_or(1);
        if !(1..=10_000).contains(&default_partitions) {
            return Err(bad(
                "default_partitions",
                format!("{default_partitions} is not between 1 and 10000"),
            ));
        }
        let request_bytes_max = file.request_bytes_max.unwrap_or(100 * 1024 * 1024);
        if !(1024..=1024 * 1024 * 1024).contains(&request_bytes_max) {
            return Err(bad("request_bytes_max", "must be between 1 KiB and 1 GiB"));
        }
        let requests_in_flight_max = file.requests_in_flight_max.unwrap_or(32);
        if !(1..=1024).contains(&requests_in_flight_max) {
            return Err(bad("requests_in_flight_max", "must be between 1 and 1024"));
        }
        let connections_max = file.connections_max.unwrap_or(10_000);
        if connections_max == 0 {
            return Err(bad("connections_max", "must be positive"));
        }
        let connections_max_idle_ms = file.connections_max_idle_ms.unwrap_or(600_000);
        if connections_max_idle_ms < 100 {
            return Err(bad("connections_max_idle_ms", "must be at least 100"));
        }
        let fetch_bytes_max = file.fetch_bytes_max.unwrap_or(55 * 1024 * 1024);
        if !(1024..=1024 * 1024 * 1024).contains(&fetch_bytes_max) {
            return Err(bad("fetch_bytes_max", "must be between 1 KiB and 1 GiB"));
        }
        let batch_cache_bytes = flags
            .batch_cache_bytes
            .or(file.batch_cache_bytes)
            .unwrap_or((shards * BATCH_CACHE_BYTES_PER_SHARD_DEFAULT) as u64);
        let batch_cache_bytes_per_shard = usize::try_from(batch_cache_bytes / shards as u64).unwrap_or(usize::MAX);
        if batch_cache_bytes_per_shard < BATCH_CACHE_BYTES_PER_SHARD_MIN {
            return Err(bad(
                "batch_cache_bytes",
                format!("{batch_cache_bytes} leaves less than 1 MiB to each of {shards} shards"),
            ));
        }
        let log_format = flags.log_format.or(file.log_format).unwrap_or_else(|| "text".to_owned());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(bad("log_format", format!("`{other}` is neither text nor json"))),
        };
        let admin_text = flags
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or_else(|| "127.0.0.1:9644".to_owned());
        let admin_listen = if admin_text == "off" {
            None
        } else {
            let addr: SocketAddr = admin_text
                .parse()
                .map_err(|e| bad("admin_listen", format!("`{admin_text}` is neither host:port nor `off`: {e}")))?;
            if addr == listen {
                return Err(bad("admin_listen", format!("{addr} is the Kafka listener's address")));
            }
            Some(addr)
        };
        let otlp_endpoint = match flags.otlp_endpoint.or(file.otlp_endpoint) {
            Some(text) => Some(crate::otlp::Endpoint::parse(&text).map_err(|reason| bad("otlp_endpoint", reason))?),
            None => None,
        };
        let mut topic_defaults = Vec::new();
        for (k, v) in file.topic_defaults {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(bad(&format!("topic_defaults.{k}"), format!("unsupported value {other}"))),
            };
            crate::topic_config::validate_one(&k, &text).map_err(|reason| bad(&format!("topic_defaults.{k}"), reason))?;
            topic_defaults.push((k, text));
        }
        let defaults = crate::groups::GroupConfig::default();
        let offsets_topic_partitions = file.offsets_topic_partitions.unwrap_or(defaults.offsets_topic_partitions);
        if !(1..=1000).contains(&offsets_topic_partitions) {
            return Err(bad("offsets_topic_partitions", "must be between 1 and 1000"));
        }
        let initial_rebalance_delay_ms = flags
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .unwrap_or(defaults.initial_rebalance_delay_ms as u64);
        if initial_rebalance_delay_ms > 300_000 {
            return Err(bad("group_initial_rebalance_delay_ms", "must be at most 300000"));
        }
        let session_timeout_ms_min = flags
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .unwrap_or(defaults.session_timeout_ms_min);
        let session_timeout_ms_max = file.group_max_session_timeout_ms.unwrap_or(defaults.session_timeout_ms_max);
        if session_timeout_ms_min < 1000 {
            return Err(bad("group_min_session_timeout_ms", "must be at least 1000"));
        }
        if session_timeout_ms_max < session_timeout_ms_min {
            return Err(bad(
                "group_max_session_timeout_ms",
                "must not be below group_min_session_timeout_ms",
            ));
        }
        let groups = crate::groups::GroupConfig {
            offsets_topic_partitions,
            initial_rebalance_delay_ms: initial_rebalance_delay_ms as i64,
            session_timeout_ms_min,
            session_timeout_ms_max,
            offset_metadata_bytes_max: file.offset_metadata_max_bytes.unwrap_or(defaults.offset_metadata_bytes_max),
        };
        let txn_defaults = crate::txn::TxnConfig::default();
        let state_partitions = file.transaction_state_partitions.unwrap_or(txn_defaults.state_partitions);
        if !(1..=1000).contains(&state_partitions) {
            return Err(bad("transaction_state_partitions", "must be between 1 and 1000"));
        }
        let timeout_ms_max = file.transaction_max_timeout_ms.unwrap_or(txn_defaults.timeout_ms_max);
        if timeout_ms_max < 1 {
            return Err(bad("transaction_max_timeout_ms", "must be positive"));
        }
        let txns = crate::txn::TxnConfig {
            state_partitions,
            timeout_ms_max,
        };
        Ok(Config {
            listen,
            advertised_host: host.to_owned(),
            advertised_port,
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data")),
            shards,
            pin_shards,
            segment_recycling: file.segment_recycling.unwrap_or(true),
            log_sync: match file.log_sync.as_deref() {
                None | Some("segment") => iouring_storage::SyncScope::Segment,
                Some("filesystem") => iouring_storage::SyncScope::Filesystem,
                Some(other) => return Err(bad("log_sync", format!("`{other}` is neither `segment` nor `filesystem`"))),
            },
            node_id: file.node_id.unwrap_or(1),
            auto_create_topics: flags.auto_create_topics.or(file.auto_create_topics).unwrap_or(true),
            default_partitions,
            request_bytes_max,
            requests_in_flight_max,
            connections_max,
            connections_max_idle_ms,
            fetch_bytes_max,
            retention_check_interval_ms: flags
                .retention_check_interval_ms
                .or(file.retention_check_interval_ms)
                .unwrap_or(300_000)
                .max(100),
            compaction_check_interval_ms: flags
                .compaction_check_interval_ms
                .or(file.compaction_check_interval_ms)
                .unwrap_or(15_000)
                .max(100),
            batch_cache_bytes_per_shard,
            log_json,
            admin_listen,
            metrics_enabled: flags.metrics_enabled.or(file.metrics_enabled).unwrap_or(true),
            otlp_endpoint,
            topic_defaults,
            groups,
            txns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_nothing_set() {
        let c = Config::merge(Flags::default(), FileConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.advertised_port, 9092);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.shards >= 1);
        assert_eq!(c.admin_listen.unwrap().to_string(), "127.0.0.1:9644");
        assert!(c.metrics_enabled);
        assert_eq!(c.otlp_endpoint, None, "traces are off unless asked for");
    }

    #[test]
    fn the_admin_listener_moves_or_turns_off_and_traces_need_an_http_collector() {
        let file: FileConfig = toml::from_str("admin_listen = \"127.0.0.1:9700\"\nmetrics_enabled = false\n").unwrap();
        let c = Config::merge(Flags::default(), file).unwrap();
        assert_eq!(c.admin_listen.unwrap().port(), 9700);
        assert!(!c.metrics_enabled);
        let off = Flags {
            admin_listen: Some("off".into()),
            ..Flags::default()
        };
        assert_eq!(Config::merge(off, FileConfig::default()).unwrap().admin_listen, None);
        let traced: FileConfig = toml::from_str("otlp_endpoint = \"http://127.0.0.1:4318\"\n").unwrap();
        assert_eq!(
            Config::merge(Flags::default(), traced).unwrap().otlp_endpoint.unwrap().path,
            "/v1/traces"
        );
        let untraceable: FileConfig = toml::from_str("otlp_endpoint = \"https://c:4318\"\n").unwrap();
        assert_eq!(Config::merge(Flags::default(), untraceable).unwrap_err().key, "otlp_endpoint");
        for bad_value in ["127.0.0.1:9092", "nowhere"] {
            let flags = Flags {
                admin_listen: Some(bad_value.into()),
                ..Flags::default()
            };
            assert_eq!(Config::merge(flags, FileConfig::default()).unwrap_err().key, "admin_listen");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig = toml::from_str("listen = \"127.0.0.1:1000\"\ndefault_partitions = 3\n").unwrap();
        let flags = Flags {
            listen: Some("127.0.0.1:2000".into()),
            ..Flags::default()
        };
        let c = Config::merge(flags, file).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.default_partitions, 3);

        // Retention's interval: Kafka's 5 minutes, then the file, then the flag.
        let file = || toml::from_str::<FileConfig>("retention_check_interval_ms = 60000\n").unwrap();
        assert_eq!(
            Config::merge(Flags::default(), FileConfig::default())
                .unwrap()
                .retention_check_interval_ms,
            300_000
        );
        assert_eq!(Config::merge(Flags::default(), file()).unwrap().retention_check_interval_ms, 60_000);
        let flags = Flags {
            retention_check_interval_ms: Some(1000),
            ..Flags::default()
        };
        assert_eq!(Config::merge(flags, file()).unwrap().retention_check_interval_ms, 1000);

        assert!(Config::merge(Flags::default(), FileConfig::default()).unwrap().segment_recycling);
        let file: FileConfig = toml::from_str("segment_recycling = false\n").unwrap();
        assert!(!Config::merge(Flags::default(), file).unwrap().segment_recycling);
    }

    #[test]
    fn log_sync_defaults_to_the_segment_and_refuses_unknown_scopes() {
        use iouring_storage::SyncScope;
        assert_eq!(
            Config::merge(Flags::default(), FileConfig::default()).unwrap().log_sync,
            SyncScope::Segment
        );
        let file: FileConfig = toml::from_str("log_sync = \"filesystem\"\n").unwrap();
        assert_eq!(Config::merge(Flags::default(), file).unwrap().log_sync, SyncScope::Filesystem);
        let file: FileConfig = toml::from_str("log_sync = \"disk\"\n").unwrap();
        let err = Config::merge(Flags::default(), file).unwrap_err().to_string();
        assert!(err.contains("log_sync") && err.contains("disk"), "{err}");
    }

    #[test]
    fn the_batch_cache_is_shared_by_the_shards() {
        let four = |extra: &str| toml::from_str::<FileConfig>(&format!("shards = 4\npin_shards = false\n{extra}")).unwrap();
        assert_eq!(
            Config::merge(Flags::default(), four("")).unwrap().batch_cache_bytes_per_shard,
            BATCH_CACHE_BYTES_PER_SHARD_DEFAULT
        );
        let c = Config::merge(Flags::default(), four("batch_cache_bytes = 1073741824\n")).unwrap();
        assert_eq!(c.batch_cache_bytes_per_shard, 256 * 1024 * 1024);
        let flags = Flags {
            batch_cache_bytes: Some(8 * 1024 * 1024),
            ..Flags::default()
        };
        let c = Config::merge(flags, four("batch_cache_bytes = 1073741824\n")).unwrap();
        assert_eq!(c.batch_cache_bytes_per_shard, 2 * 1024 * 1024);
        let e = Config::merge(Flags::default(), four("batch_cache_bytes = 3145728\n")).unwrap_err();
        assert_eq!(e.key, "batch_cache_bytes");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::merge(
            Flags {
                listen: Some("nowhere".into()),
                ..Flags::default()
            },
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "listen");
        let e = Config::merge(
            Flags {
                advertised_listener: Some("host:port".into()),
                ..Flags::default()
            },
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "advertised_listener");
        let file: FileConfig = toml::from_str("[topic_defaults]\n\"retention.ms\" = \"soon\"\n").unwrap();
        let e = Config::merge(Flags::default(), file).unwrap_err();
        assert_eq!(e.key, "topic_defaults.retention.ms");
        assert!(toml::from_str::<FileConfig>("no_such_key = 1")
            .unwrap_err()
            .to_string()
            .contains("no_such_key"));
    }
}
