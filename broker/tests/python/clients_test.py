#!/usr/bin/env python3
"""kafka-python compatibility cases against a running broker, driven by broker/tests/python_clients.rs.

Usage: clients_test.py BOOTSTRAP CASE

Each case produces with kafka-python's KafkaProducer and reads back with a KafkaConsumer that
uses explicit assign() and no consumer group (groups have groups_test.py). It
checks the content (key, value, headers, and timestamps where the case sets them), the order
within each partition and the exact count, and exits non-zero with a message naming what
differed. Every wait is bounded.
"""

import random
import socket
import sys
import time
import zlib

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from kafka.errors import MessageSizeTooLargeError
from kafka.protocol.fetch import FetchRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.produce import ProduceRequest
from kafka.record import MemoryRecords
from kafka.record.memory_records import MemoryRecordsBuilder

# Longest a case waits for records to arrive; a healthy broker needs well under a second.
CONSUME_TIMEOUT_S = 20
# How long a caught-up consumer keeps polling to prove nothing beyond the expected records exists.
EXTRA_POLL_MS = 300
# Request timeout for every client: a hung broker fails the case instead of hanging it.
REQUEST_TIMEOUT_MS = 10000

# kafka-python's names for the codecs and the batch attribute bits they set.
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# kafka-python's own compressors, by codec name.
ENCODERS = {"gzip": gzip_encode, "snappy": snappy_encode, "lz4": lz4_encode, "zstd": zstd_encode}

BOOTSTRAP = None


import checks
from checks import Failure, check, check_eq


def create_topic(name, partitions, configs=None):
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        response = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})]
        )
        for topic_error in response.topic_errors:
            check_eq(topic_error[1], 0, "CreateTopics error code for %s" % name)
    finally:
        admin.close()


def producer(**config):
    config.setdefault("request_timeout_ms", REQUEST_TIMEOUT_MS)
    config.setdefault("max_block_ms", REQUEST_TIMEOUT_MS)
    return KafkaProducer(bootstrap_servers=BOOTSTRAP, client_id="compat-producer", **config)


def consumer(**config):
    return KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        client_id="compat-consumer",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **config
    )


class Msg(object):
    """One record to produce and what it must read back as."""

    __slots__ = ("topic", "partition", "key", "value", "headers", "timestamp_ms")

    def __init__(self, topic, partition, key, value, headers=None, timestamp_ms=None):
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers or []
        self.timestamp_ms = timestamp_ms

    def fields(self):
        return (self.key, self.value, list(self.headers))


def send_all(prod, msgs, flush_every=None):
    """Sends in order (flushing every `flush_every` records to cut batches) and returns the
    RecordMetadata of each (offset -1 for acks=0)."""
    futures = []
    for i, m in enumerate(msgs):
        futures.append(
            prod.send(
                m.topic,
                key=m.key,
                value=m.value,
                headers=m.headers,
                partition=m.partition,
                timestamp_ms=m.timestamp_ms,
            )
        )
        if flush_every and (i + 1) % flush_every == 0:
            prod.flush(timeout=REQUEST_TIMEOUT_MS / 1000)
    prod.flush(timeout=REQUEST_TIMEOUT_MS / 1000)
    return [f.get(timeout=REQUEST_TIMEOUT_MS / 1000) for f in futures]


def push_queued_requests(prod):
    """Works around a kafka-python 2.x bug: an acks=0 Produce request is queued on its
    connection but written to the socket only when a later request that expects a response
    goes out on the same connection (KafkaClient.send watches a connection for write readiness
    only when the request's future is not done yet, and an acks=0 future is done at once), so
    flush() and close() return with the records never sent. A metadata request to the only
    broker, on that connection, carries them out ahead of it."""
    future = prod._metadata.request_update()
    prod._sender.wakeup()
    deadline = time.monotonic() + REQUEST_TIMEOUT_MS / 1000.0
    while not future.is_done:
        check(time.monotonic() < deadline, "metadata update after acks=0 sends did not finish")
        time.sleep(0.01)


def expect_offsets(msgs, metadata, first_offsets=None):
    """Each acked record's (partition, offset) is the next offset of its partition, in send
    order, and every record in `msgs` has a partition afterwards (from its metadata)."""
    next_offset = dict(first_offsets or {})
    for i, (m, md) in enumerate(zip(msgs, metadata)):
        if m.partition is None:
            m.partition = md.partition
        check_eq(md.partition, m.partition, "partition of record %d" % i)
        tp = TopicPartition(m.topic, m.partition)
        want = next_offset.get(tp, 0)
        check_eq(md.offset, want, "offset of record %d (%s) in its ack" % (i, tp))
        next_offset[tp] = want + 1


def by_partition(msgs, first_offsets=None):
    """{tp: [(offset, key, value, headers)]} in send order, offsets counting from the start."""
    out = {}
    for m in msgs:
        tp = TopicPartition(m.topic, m.partition)
        lst = out.setdefault(tp, [])
        lst.append(((first_offsets or {}).get(tp, 0) + len(lst),) + m.fields())
    return out


def consume_exact(expected, start=None, cons=None, timeout_s=CONSUME_TIMEOUT_S, all_tps=None):
    """Reads `expected` ({tp: [(offset, key, value, headers), ...]}) from `start` ({tp: offset},
    default the beginning) and checks that exactly those records arrive, in that order in each
    partition, and nothing after them. `all_tps` adds partitions that must stay empty. Returns
    the records read, {tp: [ConsumerRecord]}."""
    own = cons is None
    cons = cons or consumer()
    try:
        tps = sorted(set(expected) | set(all_tps or []))
        cons.assign(tps)
        for tp in tps:
            if start and tp in start:
                cons.seek(tp, start[tp])
            else:
                cons.seek_to_beginning(tp)
        got = {tp: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while any(len(got[tp]) < len(expected.get(tp, [])) for tp in tps):
            if time.monotonic() > deadline:
                counts = {str(tp): (len(got[tp]), len(expected.get(tp, []))) for tp in tps if len(got[tp]) != len(expected.get(tp, []))}
                raise Failure("timed out after %d s; (got, expected) records per partition: %s" % (timeout_s, counts))
            for tp, records in cons.poll(timeout_ms=500).items():
                got[tp].extend(records)
        # Caught up: anything more is a record the broker should not have.
        extra_deadline = time.monotonic() + EXTRA_POLL_MS / 1000.0
        while time.monotonic() < extra_deadline:
            for tp, records in cons.poll(timeout_ms=100).items():
                got[tp].extend(records)
        for tp in tps:
            want = expected.get(tp, [])
            have = [(r.offset, r.key, r.value, list(r.headers)) for r in got[tp]]
            for i, (h, w) in enumerate(zip(have, want)):
                check_eq(h, w, "record %d of %s (offset, key, value, headers)" % (i, tp))
            check_eq(len(have), len(want), "record count of %s" % (tp,))
        return got
    finally:
        if own:
            cons.close()


def fetch_raw(tp, offset, max_bytes=4 * 1024 * 1024):
    """The record batches the broker returns for one partition, parsed by kafka-python's
    record code: (base offset, last offset, compression type, record count, the batch's bytes)
    per batch."""
    request = FetchRequest[4](
        replica_id=-1,
        max_wait_time=0,
        min_bytes=0,
        max_bytes=max_bytes,
        isolation_level=0,
        topics=[(tp.topic, [(tp.partition, offset, max_bytes)])],
    )
    proto = KafkaProtocol(client_id="compat-raw")
    proto.send_request(request)
    host, port = BOOTSTRAP.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_MS / 1000) as s:
        s.sendall(proto.send_bytes())
        responses = []
        while not responses:
            data = s.recv(1 << 20)
            check(data, "broker closed the connection before answering a raw Fetch")
            responses = proto.receive_bytes(data)
    (_, response), = responses
    (_, partitions), = response.topics
    (partition, error_code, _hw, _lso, _aborted, records), = partitions
    check_eq((partition, error_code), (tp.partition, 0), "raw Fetch partition and error code")
    batches = []
    mr = MemoryRecords(records)
    while True:
        b = mr.next_batch()
        if b is None:
            break
        batches.append((b.base_offset, b.last_offset, b.compression_type, len(list(b)), bytes(b._buffer)))
    return batches


def payload(rng, i, compressible):
    """A value: repetitive text (compresses well) or random bytes, of varied sizes."""
    if compressible:
        return (("value-%d " % i) * (1 + i % 40)).encode()
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))


def keyed_messages(topic, n, seed, partitions=None):
    """Records with keys (some null), values (some null: tombstones) and 0-3 headers."""
    rng = random.Random(seed)
    msgs = []
    for i in range(n):
        key = None if i % 17 == 5 else ("key-%d-%s" % (i, "k" * (i % 7))).encode()
        value = None if i % 23 == 11 else payload(rng, i, i % 3 != 0)
        headers = [("h%d" % j, ("hv-%d-%d" % (i, j)).encode()) for j in range(i % 4)]
        if i % 5 == 0:
            headers.append(("empty", b""))
        if i % 9 == 0:
            headers.append(("bin", bytes([0, 255, i % 256])))
        partition = None if partitions is None else i % partitions
        msgs.append(Msg(topic, partition, key, value, headers))
    return msgs


# ---------------------------------------------------------------------------------------------
# Cases


def case_codecs():
    """Every codec, plus none: keyed records with headers, several per batch, three partitions.
    Checks the batches really are stored with the codec (raw Fetch), then reads them back."""
    for codec in [None] + sorted(CODECS):
        name = "codec-%s" % (codec or "none")
        create_topic(name, 3)
        msgs = keyed_messages(name, 300, seed=zlib.crc32(name.encode()), partitions=3)
        prod = producer(compression_type=codec, acks="all", linger_ms=50, batch_size=16384)
        try:
            expect_offsets(msgs, send_all(prod, msgs, flush_every=75))
        finally:
            prod.close(timeout=5)
        expected = by_partition(msgs)
        consume_exact(expected)
        for tp, records in expected.items():
            batches = fetch_raw(tp, 0)
            want_codec = CODECS.get(codec, 0)
            for b in batches:
                if b[2] == 0 and want_codec != 0:
                    # kafka-python sends a batch uncompressed when the codec would not make it
                    # smaller (DefaultRecordBatchBuilder._maybe_compress): check that is why.
                    records = b[4][61:]
                    compressed = ENCODERS[codec](records)
                    check(
                        len(compressed) >= len(records),
                        "batch at %d of %s is uncompressed though %s shrinks it" % (b[0], tp, codec),
                    )
                    continue
                check_eq(b[2], want_codec, "compression type of the batch at %d of %s" % (b[0], tp))
            check(any(b[2] == want_codec for b in batches), "no batch of %s carries codec %s" % (tp, codec))
            check_eq(sum(b[3] for b in batches), len(records), "records in the raw batches of %s" % (tp,))
            check(len(batches) < len(records), "%s: %d records in %d batches: the producer did not batch" % (tp, len(records), len(batches)))
            # Batches are contiguous and cover exactly the records produced.
            check_eq(batches[0][0], 0, "first batch's base offset of %s" % (tp,))
            for prev, nxt in zip(batches, batches[1:]):
                check_eq(nxt[0], prev[1] + 1, "base offset after the batch ending at %d of %s" % (prev[1], tp))
            check_eq(batches[-1][1], len(records) - 1, "last offset of %s" % (tp,))


def case_acks():
    """acks=0, 1 and all: every record is stored once, in order."""
    for acks in (0, 1, "all"):
        name = "acks-%s" % acks
        create_topic(name, 2)
        msgs = keyed_messages(name, 200, seed=7, partitions=2)
        prod = producer(acks=acks, linger_ms=5, compression_type="gzip" if acks == 1 else None)
        try:
            metadata = send_all(prod, msgs, flush_every=40)
            if acks == 0:
                push_queued_requests(prod)
        finally:
            prod.close(timeout=5)
        if acks == 0:
            # No answer, so no offsets: kafka-python reports -1.
            check(all(md.offset == -1 for md in metadata), "acks=0 returned offsets: %r" % metadata[:3])
        else:
            expect_offsets(msgs, metadata)
        consume_exact(by_partition(msgs))


def case_partitions():
    """100 partitions, keyed records placed by kafka-python's murmur2 partitioner: each
    partition holds exactly its keys' records in send order, at the offsets the acks named."""
    name = "many-partitions"
    partitions = 100
    create_topic(name, partitions)
    msgs = []
    for i in range(3000):
        key = ("user-%d" % (i % 450)).encode()
        msgs.append(Msg(name, None, key, ("event-%d-of-%s" % (i, key.decode())).encode(), [("seq", str(i).encode())]))
    prod = producer(acks="all", linger_ms=20, compression_type="lz4")
    try:
        metadata = send_all(prod, msgs)
        check_eq(sorted(prod.partitions_for(name)), list(range(partitions)), "partitions the producer sees")
    finally:
        prod.close(timeout=5)
    expect_offsets(msgs, metadata)
    # The same key always lands in the same partition.
    placement = {}
    for m in msgs:
        check_eq(placement.setdefault(m.key, m.partition), m.partition, "partition of key %r" % m.key)
    used = {m.partition for m in msgs}
    check(len(used) > partitions // 2, "keys spread over only %d partitions" % len(used))
    all_tps = [TopicPartition(name, p) for p in range(partitions)]
    cons = consumer()
    try:
        check_eq(sorted(cons.partitions_for_topic(name)), list(range(partitions)), "partitions the consumer sees")
        consume_exact(by_partition(msgs), cons=cons, all_tps=all_tps)
        ends = cons.end_offsets(all_tps)
        for tp in all_tps:
            check_eq(ends[tp], sum(1 for m in msgs if m.partition == tp.partition), "end offset of %s" % (tp,))
    finally:
        cons.close()


def case_seek():
    """seek() to offsets inside and at the edges of compressed batches, seek_to_end, and a
    long poll that wakes up for records produced after it started."""
    name = "seek"
    tp = TopicPartition(name, 0)
    create_topic(name, 1)
    msgs = keyed_messages(name, 100, seed=3, partitions=1)
    prod = producer(acks="all", compression_type="lz4", linger_ms=100, batch_size=1 << 20)
    try:
        expect_offsets(msgs, send_all(prod, msgs, flush_every=10))
        batches = fetch_raw(tp, 0)
        check_eq([(b[0], b[1]) for b in batches], [(i, i + 9) for i in range(0, 100, 10)], "batches of 10 records")
        every = by_partition(msgs)[tp]
        # Mid-batch, batch start, batch end, last record, the end.
        for start in (37, 40, 49, 99, 100):
            consume_exact({tp: every[start:]}, start={tp: start})
        cons = consumer()
        try:
            cons.assign([tp])
            cons.seek(tp, 55)
            check_eq(cons.position(tp), 55, "position after seek(55)")
            cons.seek_to_end(tp)
            check_eq(cons.position(tp), 100, "position after seek_to_end")
            check_eq(cons.poll(timeout_ms=200), {}, "poll at the end")
            late = keyed_messages(name, 5, seed=4, partitions=1)
            expect_offsets(late, send_all(prod, late), {tp: 100})
            consume_exact(by_partition(late, {tp: 100}), start={tp: 100}, cons=cons)
            check_eq(cons.position(tp), 105, "position after reading the late records")
        finally:
            cons.close()
    finally:
        prod.close(timeout=5)


def case_offsets():
    """ListOffsets through beginning_offsets, end_offsets and offsets_for_times, on single-record
    batches and on one compressed batch whose record timestamps are out of order."""
    name = "list-offsets"
    create_topic(name, 2)
    base = int(time.time() * 1000) - 3600 * 1000
    tp0, tp1 = TopicPartition(name, 0), TopicPartition(name, 1)
    # Partition 0: 20 single-record batches, timestamps base, base+10, ...
    single = [Msg(name, 0, b"k%d" % i, b"v%d" % i, [], base + 10 * i) for i in range(20)]
    # Partition 1: one gzip batch of 30 records with shuffled timestamps.
    rng = random.Random(11)
    stamps = [base + 10 * i for i in range(30)]
    rng.shuffle(stamps)
    shuffled = [Msg(name, 1, b"s%d" % i, b"w%d" % i, [("i", b"%d" % i)], stamps[i]) for i in range(30)]
    prod = producer(acks="all", linger_ms=0)
    try:
        expect_offsets(single, send_all(prod, single, flush_every=1))
    finally:
        prod.close(timeout=5)
    prod = producer(acks="all", linger_ms=500, batch_size=1 << 20, compression_type="gzip")
    try:
        expect_offsets(shuffled, send_all(prod, shuffled))
    finally:
        prod.close(timeout=5)
    check_eq(len(fetch_raw(tp1, 0)), 1, "batches in partition 1")

    cons = consumer()
    try:
        check_eq(cons.beginning_offsets([tp0, tp1]), {tp0: 0, tp1: 0}, "beginning_offsets")
        check_eq(cons.end_offsets([tp0, tp1]), {tp0: 20, tp1: 30}, "end_offsets")
        got = consume_exact({tp0: by_partition(single)[tp0], tp1: by_partition(shuffled)[tp1]}, cons=cons)
        for tp, msgs in ((tp0, single), (tp1, shuffled)):
            check_eq([r.timestamp for r in got[tp]], [m.timestamp_ms for m in msgs], "record timestamps of %s" % (tp,))
            check_eq({r.timestamp_type for r in got[tp]}, {0}, "timestamp types (CreateTime) of %s" % (tp,))
        for tp, msgs in ((tp0, single), (tp1, shuffled)):
            targets = [0, base - 1, base, base + 5, base + 95, base + 100, base + 190, base + 195, base + 290, base + 291, base + 10**9]
            for target in targets:
                hits = [(i, m.timestamp_ms) for i, m in enumerate(msgs) if m.timestamp_ms >= target]
                want = (hits[0][0], hits[0][1]) if hits else None
                answer = cons.offsets_for_times({tp: target})[tp]
                have = None if answer is None else (answer.offset, answer.timestamp)
                check_eq(have, want, "offsets_for_times(%s, base%+d) as (offset, timestamp)" % (tp, target - base))
    finally:
        cons.close()


def case_large():
    """A record batch of exactly max.message.bytes (the default, 1048588) is stored and read back
    whole; one byte more is refused with MESSAGE_TOO_LARGE and leaves nothing behind."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    name = "large"
    tp = TopicPartition(name, 0)
    create_topic(name, 1)
    limit = 1048588

    def batch_bytes(value_len, build=False):
        if not build:
            # The batch header, then the one record (offset and timestamp deltas 0, no headers).
            return DefaultRecordBatchBuilder.HEADER_STRUCT.size + DefaultRecordBatchBuilder.size_in_bytes(0, 0, b"big", b"x" * value_len, [])
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                      producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                      batch_size=1 << 24)
        b.append(0, timestamp=int(time.time() * 1000), key=b"big", value=b"x" * value_len, headers=[])
        return len(b.build())

    value_len = limit - 100
    while batch_bytes(value_len + 1) <= limit:
        value_len += 1
    check_eq(batch_bytes(value_len, build=True), limit, "size of the batch holding the largest value")
    check_eq(batch_bytes(value_len + 1, build=True), limit + 1, "size of the batch one byte larger")
    rng = random.Random(5)
    big = bytes(rng.getrandbits(8) for _ in range(value_len))
    too_big = bytes(rng.getrandbits(8) for _ in range(value_len + 1))
    # The client's own limit is raised so that the broker, not kafka-python, decides.
    prod = producer(acks="all", max_request_size=4 << 20, retries=0, linger_ms=0)
    try:
        md = prod.send(name, key=b"big", value=big, partition=0).get(timeout=REQUEST_TIMEOUT_MS / 1000)
        check_eq(md.offset, 0, "offset of the largest record")
        refused = prod.send(name, key=b"big", value=too_big, partition=0)
        try:
            md = refused.get(timeout=REQUEST_TIMEOUT_MS / 1000)
            raise Failure("a batch one byte over max.message.bytes was accepted at offset %d" % md.offset)
        except MessageSizeTooLargeError:
            pass
        small = prod.send(name, key=b"after", value=b"small", partition=0).get(timeout=REQUEST_TIMEOUT_MS / 1000)
        check_eq(small.offset, 1, "offset of the record after the refused one")
    finally:
        prod.close(timeout=5)
    # Default fetch sizes (1 MiB per partition) are below the batch: the broker must still
    # return it whole (KIP-74) for the consumer to make progress.
    consume_exact({tp: [(0, b"big", big, []), (1, b"after", b"small", [])]})


def case_pipelined_order():
    """Regression: Produce requests pipelined on one connection were appended out of order on
    partitions opened by those very requests (appends queued on the shard's open lock while a
    log opened were overtaken by later ones that found it open). 30 requests, each with a
    one-record batch for each of 100 fresh partitions, sent back to back before any answer;
    every partition must hold them in request order."""
    name = "pipelined"
    partitions, requests = 100, 30
    create_topic(name, partitions)

    def batch(value):
        b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16)
        b.append(timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
        b.close()
        return b.buffer()

    proto = KafkaProtocol(client_id="compat-pipelined")
    for i in range(requests):
        proto.send_request(ProduceRequest[7](
            transactional_id=None, required_acks=-1, timeout=REQUEST_TIMEOUT_MS,
            topics=[(name, [(p, batch(b"%d" % i)) for p in range(partitions)])]))
    host, port = BOOTSTRAP.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_MS / 1000) as s:
        s.sendall(proto.send_bytes())
        responses = []
        while len(responses) < requests:
            data = s.recv(1 << 20)
            check(data, "broker closed the connection after %d of %d Produce responses" % (len(responses), requests))
            responses.extend(proto.receive_bytes(data))
    for _, response in responses:
        for _, parts in response.topics:
            for part in parts:
                check_eq(part[1], 0, "Produce error code of partition %d" % part[0])
    expected = {TopicPartition(name, p): [(i, None, b"%d" % i, []) for i in range(requests)] for p in range(partitions)}
    consume_exact(expected)


RESTART_TOPIC = "restart"
RESTART_PARTITIONS = 4


def restart_messages():
    """The same records on every call: each codec writes to every partition."""
    msgs = []
    for n, codec in enumerate([None] + sorted(CODECS)):
        for m in keyed_messages(RESTART_TOPIC, 120, seed=100 + n, partitions=RESTART_PARTITIONS):
            msgs.append((codec, m))
    return msgs


def case_restart_produce():
    """Before a restart: every codec writes keyed records with headers to every partition."""
    create_topic(RESTART_TOPIC, RESTART_PARTITIONS)
    msgs = restart_messages()
    next_offsets = {}
    for codec in [None] + sorted(CODECS):
        chunk = [m for c, m in msgs if c == codec]
        prod = producer(acks="all", compression_type=codec, linger_ms=20)
        try:
            expect_offsets(chunk, send_all(prod, chunk, flush_every=50), next_offsets)
        finally:
            prod.close(timeout=5)
        for m in chunk:
            tp = TopicPartition(m.topic, m.partition)
            next_offsets[tp] = next_offsets.get(tp, 0) + 1
    consume_exact(by_partition([m for _, m in msgs]))


def case_restart_consume():
    """After a restart: everything is there, and new records continue at the old end."""
    msgs = [m for _, m in restart_messages()]
    expected = by_partition(msgs)
    consume_exact(expected)
    tps = sorted(expected)
    ends = {tp: len(records) for tp, records in expected.items()}
    cons = consumer()
    try:
        check_eq(cons.end_offsets(tps), ends, "end offsets after the restart")
    finally:
        cons.close()
    more = keyed_messages(RESTART_TOPIC, 40, seed=999, partitions=RESTART_PARTITIONS)
    prod = producer(acks="all", compression_type="zstd")
    try:
        expect_offsets(more, send_all(prod, more), ends)
    finally:
        prod.close(timeout=5)
    consume_exact(by_partition(more, ends), start=ends)


if __name__ == "__main__":
    sys.exit(checks.main(sys.modules[__name__]))
