//! The broker binary: reads the configuration, recovers the data directory, starts one shard
//! per core and serves Kafka clients until SIGTERM or SIGINT, then stops cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use broker::config::{Config, Flags};
use broker::metadata::MetaStore;
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// Huge allocations become lazily backed reservations, so that a hostile array count in a
/// request cannot abort the process (see `broker::alloc`).
#[global_allocator]
static ALLOCATOR: broker::alloc::ReservingAllocator = broker::alloc::ReservingAllocator;

fn main() {
    if let Err(e) = run() {
        eprintln!("broker: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let config = Config::load(Flags::parse())?;
    let (writer, _flush_guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = if config.log_json {
        tracing_subscriber::fmt::layer().json().with_writer(writer).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    };
    // Each layer has its own filter: RUST_LOG decides what is logged, and the request spans
    // reach the OTLP layer (when there is one) whatever it says.
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => Some(
            broker::otlp::layer(endpoint.clone())
                .context("starting the OTLP exporter")?
                .with_filter(tracing_subscriber::filter::Targets::new().with_target(broker::otlp::TARGET, tracing::Level::DEBUG)),
        ),
        None => None,
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces).init();

    if broker::alloc::overcommit_is_strict() {
        tracing::warn!(
            target: "broker",
            "vm.overcommit_memory is 2 (strict): a request declaring a huge array can make an allocation fail and abort the broker"
        );
    }
    check_port_free(config.listen)?;
    // Before the shards start: their metric handles must reach the recorder, and /health and
    // /ready must answer (503) while partitions recover.
    let metrics = if config.metrics_enabled {
        Some(broker::metrics::install()?)
    } else {
        None
    };
    let admin = Arc::new(broker::admin_http::AdminState {
        ready: AtomicBool::new(false),
        metrics,
        data_dir: config.data_dir.clone(),
    });
    if let Some(addr) = config.admin_listen {
        let listener = broker::admin_http::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin_listen): {e}"))?;
        broker::admin_http::spawn(listener, admin.clone()).context("starting the admin listener")?;
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let leftovers =
        shard::remove_deleted(&config.data_dir).with_context(|| format!("clearing deleted partitions in {}", config.data_dir.display()))?;
    if leftovers > 0 {
        tracing::info!(target: "broker", leftovers, "removed partition directories a deletion left behind");
    }
    let meta = MetaStore::open(&config.data_dir, config.shards, config.topic_defaults.clone()).context("opening cluster metadata")?;
    broker::internal::ensure_topic(&meta, broker::groups::OFFSETS_TOPIC, config.groups.offsets_topic_partitions)
        .context("creating the committed offsets topic")?;
    broker::internal::ensure_topic(&meta, broker::txn::TXN_TOPIC, config.txns.state_partitions)
        .context("creating the transaction state topic")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }

    let config = Arc::new(config);
    let (started_tx, started_rx) = mpsc::channel();
    let provider_meta = meta.clone();
    let (recycling, sync) = (config.segment_recycling, config.log_sync);
    let provider: shard::LogConfigProvider = Arc::new(move |tp| {
        provider_meta.log_config(tp).map(|mut c| {
            c.recycle_segments = recycling;
            c.sync = sync;
            c
        })
    });
    let runtime = shard::RuntimeConfig {
        shards: config.shards,
        pin: config.pin_shards,
        data_dir: config.data_dir.clone(),
        batch_cache_bytes: config.batch_cache_bytes_per_shard,
    };
    let (c, m, s) = (config.clone(), meta.clone(), stop.clone());
    let shards = shard::start(runtime, provider, move |ctx| {
        broker::server::run_shard(ctx, c.clone(), m.clone(), s.clone(), started_tx.clone())
    })
    .context("starting shards")?;

    let mut partitions = 0;
    for _ in 0..config.shards {
        match started_rx.recv_timeout(Duration::from_secs(600)) {
            Ok(Ok(n)) => partitions += n,
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("{e}");
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("a shard did not finish starting");
            }
        }
    }
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        target: "broker",
        listen = %config.listen,
        admin = %config.admin_listen.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        advertised = %format!("{}:{}", config.advertised_host, config.advertised_port),
        shards = config.shards,
        partitions,
        data_dir = %config.data_dir.display(),
        "broker ready"
    );
    // A shard that dies (a panic kills its executor) ends the process with an error.
    shards.join().context("a shard failed")?;
    tracing::info!(target: "broker", "broker stopped");
    Ok(())
}

/// How long start-up waits for a listener on its port to go away. A broker that has just died
/// keeps its listening socket a little longer, while the kernel tears down its io_uring rings.
const PORT_WAIT_MAX: Duration = Duration::from_secs(2);

/// Fails if another process listens on `listen`. Shards bind with SO_REUSEPORT, which would
/// silently share the port with another broker already listening there, so a plain bind
/// (SO_REUSEADDR) goes first. It also fails while connections of a broker that just stopped or
/// died hold the port in TIME_WAIT: they inherited SO_REUSEPORT, not SO_REUSEADDR, from its
/// listeners, so only a socket with SO_REUSEPORT, as the shards' are, may bind over them. A
/// refused connection tells those leftovers from a live listener; anything else (an accept, a
/// timeout behind a full backlog) counts as one, until `PORT_WAIT_MAX` has passed.
fn check_port_free(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = std::time::Instant::now() + PORT_WAIT_MAX;
    loop {
        let e = match std::net::TcpListener::bind(listen) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if e.kind() != std::io::ErrorKind::AddrInUse || std::time::Instant::now() >= deadline {
            anyhow::bail!("cannot listen on {listen}: {e} (is another broker running there?)");
        }
        match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Err(refused) if refused.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
