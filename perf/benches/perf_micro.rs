//! criterion micro-benchmarks of perf's hot paths: building a record batch and walking one,
//! and recording a latency, so that the generator's own cost per message is known.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perf::batch::{walk_values, BatchBuilder, Compression};
use perf::stats::Latency;

fn build(n: usize, value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let stamp = (i as u64).to_be_bytes();
        b.append(1_700_000_000_000, None, &[&stamp, value]);
    }
    b.finish().unwrap().expect("a batch")
}

fn batch(c: &mut Criterion) {
    let value = vec![7u8; 1016];
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(128));
    g.bench_function("build 128 x 1 KiB", |b| b.iter(|| build(128, &value)));
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
