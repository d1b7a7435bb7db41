//! criterion micro-benchmarks of the broker's and the shard's hot paths that have no bench of
//! their own crate (iouring-storage's are in its `benches/micro.rs`, perf's in
//! `perf/benches/perf_micro.rs`): assembling a fetch response around record bytes without
//! copying them, finding a record by timestamp in a stored batch, and placing new partitions.
//! `cargo bench --workspace` runs them all.

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

criterion_group!(benches, fetch_response, timestamp_search, placement);
criterion_main!(benches);
