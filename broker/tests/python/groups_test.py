#!/usr/bin/env python3
"""kafka-python consumer groups against a running broker, driven by broker/tests/consumer_groups.rs.

Usage: groups_test.py BOOTSTRAP CASE

Cases commit offsets in a group, resume from them (after a restart or a kill -9 that the
Rust side performs between cases), seek and look up offsets by time inside a group, split
partitions between two members, and list, describe and delete groups with the admin client.
Every wait is bounded; a failure names what differed.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

import checks
from checks import check, check_eq

# Longest a case waits for records or an assignment; a healthy broker needs a few seconds.
WAIT_S = 40
REQUEST_TIMEOUT_MS = 15000
# How long a caught-up consumer keeps polling to prove nothing more arrives.
EXTRA_POLL_MS = 500

BOOTSTRAP = None

# The topic the commit/resume cases share, its partition count and records per partition.
RESUME_TOPIC = "py-groups"
RESUME_GROUP = "py-g"
RESUME_PARTITIONS = 3
RESUME_RECORDS = 100
# Offsets committed by `commit`, then by `resume_after_restart`, per partition.
FIRST_COMMIT = {0: 40, 1: 70, 2: 100}
SECOND_COMMIT = {0: 90, 1: 95, 2: 100}


def create_topic(name, partitions):
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def produce(topic, partitions, per_partition, timestamp_ms=None):
    prod = KafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=REQUEST_TIMEOUT_MS, linger_ms=5)
    futures = []
    for p in range(partitions):
        for i in range(per_partition):
            ts = timestamp_ms(i) if timestamp_ms else None
            futures.append(prod.send(topic, value=("%d:%d" % (p, i)).encode(), partition=p, timestamp_ms=ts))
    prod.flush()
    for f in futures:
        f.get(timeout=10)
    prod.close()


def group_consumer(group, **config):
    config.setdefault("auto_offset_reset", "earliest")
    return KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        **config
    )


def wait_assigned(consumer):
    deadline = time.monotonic() + WAIT_S
    while not consumer.assignment():
        check(time.monotonic() < deadline, "no assignment after %d s" % WAIT_S)
        # Joining happens inside poll; records that arrive meanwhile are not wanted here.
        consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)
    return consumer.assignment()


def read_exactly(consumer, expected):
    """Polls until `expected` records arrived, then a little longer, and checks that exactly
    {partition: [offsets]} came, in order per partition."""
    got = {}
    deadline = time.monotonic() + WAIT_S
    count = sum(len(v) for v in expected.values())
    while sum(len(v) for v in got.values()) < count:
        check(time.monotonic() < deadline, "read %r, expected %r" % (summary(got), summary(expected)))
        for tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                check_eq(r.value, ("%d:%d" % (tp.partition, r.offset)).encode(), "value at %s/%d" % (tp, r.offset))
                got.setdefault(tp.partition, []).append(r.offset)
    extra = consumer.poll(timeout_ms=EXTRA_POLL_MS)
    check(not any(extra.values()), "records beyond those expected: %r" % extra)
    check_eq(summary(got), summary(expected), "records read")


def summary(by_partition):
    """{partition: (first, last, count)} for readable failure messages."""
    return {p: (v[0], v[-1], len(v)) if v else None for p, v in sorted(by_partition.items()) if v}


def commit_explicit(consumer, topic, offsets, tag):
    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "%s-%d" % (tag, p), -1) for p, o in offsets.items()})


def check_committed(consumer, topic, offsets, tag):
    for p, o in offsets.items():
        c = consumer.committed(TopicPartition(topic, p), metadata=True)
        check(c is not None, "nothing committed for partition %d" % p)
        check_eq((c.offset, c.metadata), (o, "%s-%d" % (tag, p)), "committed offset of partition %d" % p)


def case_commit():
    create_topic(RESUME_TOPIC, RESUME_PARTITIONS)
    produce(RESUME_TOPIC, RESUME_PARTITIONS, RESUME_RECORDS)
    c = group_consumer(RESUME_GROUP)
    c.subscribe([RESUME_TOPIC])
    read_exactly(c, {p: list(range(RESUME_RECORDS)) for p in range(RESUME_PARTITIONS)})
    commit_explicit(c, RESUME_TOPIC, FIRST_COMMIT, "first")
    check_committed(c, RESUME_TOPIC, FIRST_COMMIT, "first")
    c.close(autocommit=False)


def resume(committed, tag, next_commit, next_tag):
    c = group_consumer(RESUME_GROUP)
    check_committed(c, RESUME_TOPIC, committed, tag)
    c.subscribe([RESUME_TOPIC])
    read_exactly(c, {p: list(range(o, RESUME_RECORDS)) for p, o in committed.items() if o < RESUME_RECORDS})
    if next_commit:
        commit_explicit(c, RESUME_TOPIC, next_commit, next_tag)
    c.close(autocommit=False)


def case_resume_after_restart():
    resume(FIRST_COMMIT, "first", SECOND_COMMIT, "second")


def case_resume_after_kill():
    resume(SECOND_COMMIT, "second", None, None)


def case_seek_in_group():
    topic, group = "py-seek", "py-seek-g"
    base = int(time.time() * 1000) - 100000
    create_topic(topic, 1)
    produce(topic, 1, 50, timestamp_ms=lambda i: base + i * 1000)
    tp = TopicPartition(topic, 0)
    c = group_consumer(group)
    c.subscribe([topic])
    check_eq(wait_assigned(c), {tp}, "assignment")
    # kafka-python keeps the OffsetFetch future of a poll that timed out and hands it to the
    # next fetch of the same partitions. A seek now would leave it pending, and the committed()
    # below would get its answer, from before the commit (seen once in CI, on a loaded
    # machine). Resolving the position first uses it up.
    c.position(tp)
    found = c.offsets_for_times({tp: base + 10500})[tp]
    check_eq((found.offset, found.timestamp), (11, base + 11000), "offsets_for_times")
    c.seek(tp, found.offset)
    read_exactly(c, {0: list(range(11, 50))})
    c.seek_to_beginning(tp)
    check_eq(c.position(tp), 0, "position after seek_to_beginning")
    c.seek_to_end(tp)
    check_eq(c.position(tp), 50, "position after seek_to_end")
    commit_explicit(c, topic, {0: 25}, "seek")
    check_committed(c, topic, {0: 25}, "seek")
    c.close(autocommit=False)
    again = group_consumer(group)
    again.subscribe([topic])
    read_exactly(again, {0: list(range(25, 50))})
    again.close(autocommit=False)


def case_two_members():
    topic, group = "py-two", "py-two-g"
    create_topic(topic, 4)
    produce(topic, 4, 50)
    a, b = group_consumer(group, client_id="member-a"), group_consumer(group, client_id="member-b")
    a.subscribe([topic])
    b.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + WAIT_S
    while True:
        for c in (a, b):
            for tp, records in c.poll(timeout_ms=100).items():
                seen.update((tp.partition, r.offset) for r in records)
        both = a.assignment() and b.assignment()
        if both and len(seen) == 200 and not (a.assignment() & b.assignment()):
            break
        check(
            time.monotonic() < deadline,
            "after %d s: %d records, assignments %r and %r" % (WAIT_S, len(seen), a.assignment(), b.assignment()),
        )
    check_eq(len(a.assignment()) + len(b.assignment()), 4, "partitions assigned in all")
    check_eq(seen, {(p, o) for p in range(4) for o in range(50)}, "records read by the two members")
    a.close(autocommit=False)
    b.close(autocommit=False)


def case_admin_groups():
    topic, group = "py-admin", "py-admin-g"
    create_topic(topic, 2)
    produce(topic, 2, 10)
    c = group_consumer(group, client_id="admin-member")
    c.subscribe([topic])
    read_exactly(c, {0: list(range(10)), 1: list(range(10))})
    c.commit()
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=REQUEST_TIMEOUT_MS)
    listed = dict(admin.list_consumer_groups())
    check_eq(listed.get(group), "consumer", "listed protocol type of %s in %r" % (group, listed))
    (described,) = admin.describe_consumer_groups([group])
    check_eq((described.group, described.state, described.protocol_type), (group, "Stable", "consumer"), "described group")
    check_eq(len(described.members), 1, "members")
    member = described.members[0]
    check_eq(member.client_id, "admin-member", "member client id")
    assigned = {(t, p) for t, ps in member.member_assignment.assignment for p in ps}
    check_eq(assigned, {(topic, 0), (topic, 1)}, "member assignment")
    offsets = admin.list_consumer_group_offsets(group)
    check_eq({tp.partition: om.offset for tp, om in offsets.items()}, {0: 10, 1: 10}, "listed committed offsets")
    (result,) = admin.delete_consumer_groups([group])
    check_eq(result[1].errno, 68, "deleting a group with a member (NON_EMPTY_GROUP)")
    c.close(autocommit=False)
    # The member left with close(): the group is empty now and can go.
    (result,) = admin.delete_consumer_groups([group])
    check_eq(result[1].errno, 0, "deleting the empty group")
    check(group not in dict(admin.list_consumer_groups()), "the deleted group is no longer listed")
    check_eq(admin.list_consumer_group_offsets(group), {}, "offsets of the deleted group")
    admin.close()


if __name__ == "__main__":
    sys.exit(checks.main(sys.modules[__name__]))
