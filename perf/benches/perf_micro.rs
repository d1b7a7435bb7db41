//! criterion micro-benchmarks of perf's hot paths: building a record batch and walking one,
//! and recording a latency, so that the generator's own cost per message is known.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perf::batch::{walk_values, Batch, BatchBuilder, Compression, SharedPayload};
use perf::stats::Latency;

fn build(n: usize, value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let stamp = (i as u64).to_be_bytes();
        b.append(1_700_000_000_000, None, &[&stamp, value]);
    }
    b.finish().unwrap().expect("a batch").to_bytes()
}

/// As the producers build them: each value an 8-byte stamp and the producer's payload, which
/// the batch refers to instead of copying.
fn build_sharing(n: usize, payload: &SharedPayload) -> Batch {
    let mut b = BatchBuilder::with_capacity(Compression::None, 128 * 1024 + 8 * 1024).sharing(payload.clone());
    for i in 0..n {
        let stamp = (i as u64).to_be_bytes();
        b.append_with_payload(1_700_000_000_000, None, &stamp);
    }
    b.finish().unwrap().expect("a batch")
}

/// The keyed small-batches workload's batches: 100 B values (an 8-byte stamp and 92 bytes) with
/// keys `key-{k}`, 16 KiB a batch.
fn build_keyed(keys: &[Vec<u8>], value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::with_capacity(Compression::None, 16 * 1024 + 256);
    for (i, key) in keys.iter().enumerate() {
        let stamp = (i as u64).to_be_bytes();
        b.append(1_700_000_000_000 + i as i64 / 16, Some(key), &[&stamp, value]);
    }
    b.finish().unwrap().expect("a batch").to_bytes()
}

fn batch(c: &mut Criterion) {
    let value = vec![7u8; 1016];
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(128));
    g.bench_function("build 128 x 1 KiB", |b| b.iter(|| build(128, &value)));
    let payload = SharedPayload::new(Bytes::from(value.clone()));
    g.bench_function("build 128 x 1 KiB, payload referred", |b| b.iter(|| build_sharing(128, &payload)));
    let keys: Vec<Vec<u8>> = (0..128).map(|i| format!("key-{}", i * 77 % 10_000).into_bytes()).collect();
    let small = vec![7u8; 92];
    g.bench_function("build 128 x 100 B keyed", |b| b.iter(|| build_keyed(&keys, &small)));
    let bytes = build(128, &value);
    g.bench_function("walk 128 x 1 KiB", |b| {
        b.iter_batched(
            || bytes.clone(),
            |data| {
                let mut sum = 0u64;
                walk_values(&data, |v| sum += v[0] as u64).unwrap();
                sum
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn histogram(c: &mut Criterion) {
    let mut h = Latency::default();
    let mut x = 1u64;
    c.bench_function("latency record", |b| {
        b.iter(|| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            h.record_us(x % 100_000);
        })
    });
}

criterion_group!(benches, batch, histogram);
criterion_main!(benches);
