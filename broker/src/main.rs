//! The broker binary: reads the configuration, recovers the data directory, starts one shard
//! per core and serves Kafka clients until SIGTERM or SIGINT, then stops cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use broker::config::{Config, Flags};
use broker::metadata::MetaStore;
use clap::Parser;

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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }

    if broker::alloc::overcommit_is_strict() {
        tracing::warn!(
            target: "broker",
            "vm.overcommit_memory is 2 (strict): a request declaring a huge array can make an allocation fail and abort the broker"
        );
    }
    // Shards bind with SO_REUSEPORT, which would silently share the port with another broker
    // already listening there. A plain bind first tells the two apart.
    match std::net::TcpListener::bind(config.listen) {
        Ok(probe) => drop(probe),
        Err(e) => anyhow::bail!("cannot listen on {}: {e} (is another broker running there?)", config.listen),
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let meta = MetaStore::open(&config.data_dir, config.shards, config.topic_defaults.clone()).context("opening cluster metadata")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }

    let config = Arc::new(config);
    let (started_tx, started_rx) = mpsc::channel();
    let provider_meta = meta.clone();
    let provider: shard::LogConfigProvider = Arc::new(move |tp| provider_meta.log_config(tp));
    let runtime = shard::RuntimeConfig {
        shards: config.shards,
        pin: config.pin_shards,
        data_dir: config.data_dir.clone(),
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
    tracing::info!(
        target: "broker",
        listen = %config.listen,
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
