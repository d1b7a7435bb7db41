//! criterion micro-benchmarks of the broker's and the shard's hot paths that have no bench of
//! their own crate (iouring-storage's are in its `benches/micro.rs`, perf's in
//! `perf/benches/perf_micro.rs`): assembling a fetch response around record bytes without
//! copying them, finding a record by timestamp in a stored batch, placing new partitions, and
//! a round trip over the cross-core mesh beside the machine's own cross-core wake-up (two
//! pinned threads passing a message back and forth). `cargo bench --workspace` runs them all.

use std::any::Any;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::frame::{encode_fetch, Records};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

/// A fetch response of `partitions` partitions, each with a `batch_bytes` batch to splice in.
fn fetch_parts(partitions: usize, batch_bytes: usize) -> (FetchResponse, Vec<Records>) {
    let data = Bytes::from(vec![7u8; batch_bytes]);
    let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(
            (0..partitions)
                .map(|i| {
                    PartitionData::default()
                        .with_partition_index(i as i32)
                        .with_high_watermark(1000)
                        .with_records(Some(Bytes::from_static(b"placeholder")))
                })
                .collect(),
        )]);
    let records = (0..partitions)
        .map(|_| Records::shared(vec![data.slice(..16), data.slice(16..)]))
        .collect();
    (response, records)
}

fn fetch_response(c: &mut Criterion) {
    let mut g = c.benchmark_group("broker fetch response");
    for (partitions, batch) in [(1usize, 1024 * 1024), (16, 128 * 1024), (1000, 1024)] {
        g.throughput(Throughput::Bytes((partitions * batch) as u64));
        g.bench_function(format!("{partitions} partitions x {} KiB", batch / 1024), |b| {
            b.iter_batched(
                || fetch_parts(partitions, batch),
                |(response, records)| encode_fetch(11, 1, response, records).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn timestamp_search(c: &mut Criterion) {
    // A stored batch of 1,000 records, 1 KiB each, timestamps one ms apart.
    let batch = iouring_storage_batch();
    let mut g = c.benchmark_group("broker records");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("first_at_or_after, last record of 1000", |b| {
        b.iter(|| broker::records::first_at_or_after(&batch, 1_700_000_000_999).unwrap())
    });
    g.finish();
}

/// An uncompressed v2 batch of 1,000 records (the layout the storage crate documents).
fn iouring_storage_batch() -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..1000i64 {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, i); // timestamp delta
        put_varint(&mut body, i); // offset delta
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, 1024);
        body.extend(std::iter::repeat_n(1u8, 1024));
        put_varint(&mut body, 0); // headers
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]); // CRC: not checked by the search
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&999i32.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_999i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1000i32.to_be_bytes());
    b.extend_from_slice(&records);
    b
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn placement(c: &mut Criterion) {
    c.bench_function("shard placement of 1000 partitions over 2 shards", |b| {
        b.iter(|| shard::placement::assign(&[10, 12], 1000))
    });
}

/// Pins the calling thread to `cpu`, as the shards are pinned.
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Unpinned (one core, or no permission) is still a valid measurement, only a noisier one.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The machine's own cross-core wake-up: two threads pinned to cores 0 and 1 pass a token back
/// and forth over std channels, each side sleeping in between, as a parked shard does.
fn thread_round_trips(iters: u64) -> Duration {
    let (ping_tx, ping_rx) = mpsc::sync_channel::<u64>(1);
    let (pong_tx, pong_rx) = mpsc::sync_channel::<u64>(1);
    let peer = std::thread::spawn(move || {
        pin(1);
        while let Ok(v) = ping_rx.recv() {
            if pong_tx.send(v).is_err() {
                break;
            }
        }
    });
    let caller = std::thread::spawn(move || {
        pin(0);
        let start = Instant::now();
        for i in 0..iters {
            ping_tx.send(i).expect("the peer thread runs");
            pong_rx.recv().expect("the peer thread answers");
        }
        start.elapsed()
    });
    let elapsed = caller.join().expect("the calling thread ends");
    peer.join().expect("the peer thread ends");
    elapsed
}

/// Two shards of the real runtime; shard 0 runs round trips to shard 1 on request.
struct Mesh {
    /// Taken (closed) at drop, which ends shard 0.
    requests: Option<mpsc::Sender<u64>>,
    elapsed: mpsc::Receiver<Duration>,
    stop: Option<futures::channel::oneshot::Sender<()>>,
    shards: Option<shard::ShardSet>,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn start() -> Mesh {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (requests, request_rx) = mpsc::channel::<u64>();
        let (elapsed_tx, elapsed) = mpsc::channel::<Duration>();
        let (stop, stop_rx) = futures::channel::oneshot::channel::<()>();
        let shard0 = Arc::new(Mutex::new(Some((request_rx, elapsed_tx))));
        let shard1 = Arc::new(Mutex::new(Some(stop_rx)));
        let config = shard::RuntimeConfig {
            shards: 2,
            pin: std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
            data_dir: dir.path().to_owned(),
            batch_cache_bytes: 1 << 20,
        };
        let provider: shard::LogConfigProvider = Arc::new(|_: &shard::TopicPartition| None);
        let shards = shard::start(config, provider, move |ctx: shard::ShardContext| {
            let (shard0, shard1) = (shard0.clone(), shard1.clone());
            async move {
                ctx.partitions.set_service(Rc::new(()));
                if ctx.id.0 == 1 {
                    let stop = shard1.lock().expect("not poisoned").take().expect("one shard 1");
                    let _ = stop.await;
                    return;
                }
                let (request_rx, elapsed_tx) = shard0.lock().expect("not poisoned").take().expect("one shard 0");
                // Blocking here is fine: this shard has nothing else to run between requests.
                while let Ok(iters) = request_rx.recv() {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let noop = shard::Task(Box::new(|_: Rc<dyn Any>| -> shard::TaskFuture {
                            Box::pin(async { Box::new(()) as shard::TaskOutput })
                        }));
                        let answers = ctx.router.call(shard::ShardId(1), vec![shard::Op::Run(noop)]).await;
                        assert!(matches!(answers.as_deref(), Ok([shard::OpResult::Ran(Ok(_))])));
                    }
                    if elapsed_tx.send(start.elapsed()).is_err() {
                        break;
                    }
                }
            }
        })
        .expect("two shards start");
        Mesh {
            requests: Some(requests),
            elapsed,
            stop: Some(stop),
            shards: Some(shards),
            _dir: dir,
        }
    }

    fn round_trips(&self, iters: u64) -> Duration {
        self.requests.as_ref().expect("open until drop").send(iters).expect("shard 0 runs");
        self.elapsed.recv().expect("shard 0 answers")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Closing the request channel ends shard 0; the stop signal ends shard 1.
        drop(self.requests.take());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(shards) = self.shards.take() {
            shards.join().expect("the shards end cleanly");
        }
    }
}

fn cross_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross-core round trip, the peer parked in between");
    g.bench_function("machine: two pinned threads over std channels", |b| {
        b.iter_custom(thread_round_trips)
    });
    let mesh = Mesh::start();
    g.bench_function("shard mesh: one no-op op to the other shard", |b| {
        b.iter_custom(|iters| mesh.round_trips(iters))
    });
    g.finish();
    drop(mesh);
}

criterion_group!(benches, fetch_response, timestamp_search, placement, cross_core);
criterion_main!(benches);
