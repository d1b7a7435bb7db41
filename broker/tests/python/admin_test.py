#!/usr/bin/env python3
"""Admin APIs driven by kafka-python against a running broker, from broker/tests/admin.rs.

Usage: admin_test.py BOOTSTRAP DATA_DIR CASE

Each case drives one group of admin APIs with kafka-python's KafkaAdminClient (and its
producer and consumer to see the effects), and checks what changed on the broker: directories,
segments, offsets, metadata, records. APIs kafka-python 2.x has no request class for
(DescribeCluster, IncrementalAlterConfigs, DeleteTopics v6) are described here in kafka-python's
own schema types and sent through its client. Exits non-zero with a message naming what
differed; every wait is bounded.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import BrokerResponseError, KafkaStorageError, MessageSizeTooLargeError
from kafka.protocol.api import Request, Response
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.offset_for_leader_epoch import (OffsetForLeaderEpochRequest, OffsetForLeaderEpochRequest_v4,
                                                    OffsetForLeaderEpochResponse_v4)
from kafka.protocol.types import (Array, Boolean, CompactArray, CompactString, Int8, Int16, Int32, Int64, Schema,
                                  String, TaggedFields)

# Request timeout for every client: a hung broker fails the case instead of hanging it.
REQUEST_TIMEOUT_MS = 10000
# Longest a case waits for something the broker does in the background (retention).
BACKGROUND_WAIT_S = 20
NODE_ID = 1

# Kafka error codes the cases expect.
NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PARTITIONS = 37
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40
INVALID_REQUEST = 42
KAFKA_STORAGE_ERROR = 56
UNKNOWN_LEADER_EPOCH = 75
FENCED_LEADER_EPOCH = 74
UNKNOWN_TOPIC_ID = 100
UNSUPPORTED_ENDPOINT_TYPE = 115

# DescribeConfigs config sources.
SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

BOOTSTRAP = None
DATA_DIR = None


from checks import Failure, check, check_eq, run_case


# --- Requests kafka-python 2.x has no class for, in its own schema types. -------------------


class DescribeClusterResponse_v0(Response):
    API_KEY = 60
    API_VERSION = 0
    FLEXIBLE_VERSION = True
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        ("brokers", CompactArray(
            ("broker_id", Int32),
            ("host", CompactString("utf-8")),
            ("port", Int32),
            ("rack", CompactString("utf-8")),
            ("tags", TaggedFields))),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields))


class DescribeClusterRequest_v0(Request):
    API_KEY = 60
    API_VERSION = 0
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = DescribeClusterResponse_v0
    SCHEMA = Schema(
        ("include_cluster_authorized_operations", Boolean),
        ("tags", TaggedFields))


class DescribeClusterResponse_v1(Response):
    API_KEY = 60
    API_VERSION = 1
    FLEXIBLE_VERSION = True
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("endpoint_type", Int8),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        ("brokers", CompactArray(
            ("broker_id", Int32),
            ("host", CompactString("utf-8")),
            ("port", Int32),
            ("rack", CompactString("utf-8")),
            ("tags", TaggedFields))),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields))


class DescribeClusterRequest_v1(Request):
    API_KEY = 60
    API_VERSION = 1
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = DescribeClusterResponse_v1
    SCHEMA = Schema(
        ("include_cluster_authorized_operations", Boolean),
        ("endpoint_type", Int8),
        ("tags", TaggedFields))


class IncrementalAlterConfigsResponse_v0(Response):
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("responses", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("resource_type", Int8),
            ("resource_name", String("utf-8")))))


class IncrementalAlterConfigsRequest_v0(Request):
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        ("resources", Array(
            ("resource_type", Int8),
            ("resource_name", String("utf-8")),
            ("configs", Array(
                ("name", String("utf-8")),
                ("config_operation", Int8),
                ("value", String("utf-8")))))),
        ("validate_only", Boolean))


SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


# kafka-python 2.3.3 describes OffsetForLeaderEpoch v4 without marking it flexible, so it sends
# a v1 request header; the protocol says v4 uses the flexible (v2) header.
class FlexibleOffsetForLeaderEpochResponse_v4(OffsetForLeaderEpochResponse_v4):
    FLEXIBLE_VERSION = True


class FlexibleOffsetForLeaderEpochRequest_v4(OffsetForLeaderEpochRequest_v4):
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = FlexibleOffsetForLeaderEpochResponse_v4


class DeleteTopicsResponse_v6(Response):
    API_KEY = 20
    API_VERSION = 6
    FLEXIBLE_VERSION = True
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("responses", CompactArray(
            ("name", CompactString("utf-8")),
            ("topic_id_high", Int64),
            ("topic_id_low", Int64),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("tags", TaggedFields))),
        ("tags", TaggedFields))


class DeleteTopicsRequest_v6(Request):
    API_KEY = 20
    API_VERSION = 6
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = DeleteTopicsResponse_v6
    SCHEMA = Schema(
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("topic_id_high", Int64),
            ("topic_id_low", Int64),
            ("tags", TaggedFields))),
        ("timeout_ms", Int32),
        ("tags", TaggedFields))


def uuid_halves(u):
    """A UUID as the two signed 64-bit halves the wire carries."""
    def signed(x):
        return x - (1 << 64) if x >= (1 << 63) else x
    return signed(u.int >> 64), signed(u.int & ((1 << 64) - 1))


# --- Helpers. ---------------------------------------------------------------------------------


def admin():
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=REQUEST_TIMEOUT_MS)


def create_topic(a, name, partitions, configs=None):
    response = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                         topic_configs=configs or {})])
    for topic_error in response.topic_errors:
        check_eq(topic_error[1], NONE, "CreateTopics error code for %s" % name)


def produce(topic, values, partition=0, each_own_batch=True):
    """Sends `values` and waits for each; with `each_own_batch`, one batch per record (linger 0,
    waited one by one), so offsets and batches match one to one."""
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0,
                             request_timeout_ms=REQUEST_TIMEOUT_MS, max_block_ms=REQUEST_TIMEOUT_MS)
    try:
        offsets = []
        futures = []
        for v in values:
            f = producer.send(topic, value=v, partition=partition)
            if each_own_batch:
                offsets.append(f.get(timeout=REQUEST_TIMEOUT_MS / 1000).offset)
            else:
                futures.append(f)
        producer.flush(timeout=REQUEST_TIMEOUT_MS / 1000)
        offsets.extend(f.get(timeout=REQUEST_TIMEOUT_MS / 1000).offset for f in futures)
        return offsets
    finally:
        producer.close(timeout=5)


def consume_from_beginning(topic, partition, expect_count):
    """Records of one partition from the earliest offset, until `expect_count` or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, group_id=None,
                             request_timeout_ms=REQUEST_TIMEOUT_MS, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = []
        deadline = time.time() + BACKGROUND_WAIT_S
        while len(records) < expect_count and time.time() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def earliest_and_latest(topic, partition):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        tp = TopicPartition(topic, partition)
        return consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def partition_dir(topic, partition):
    return os.path.join(DATA_DIR, "%s-%d" % (topic, partition))


def segments(topic, partition):
    d = partition_dir(topic, partition)
    return sorted(f for f in os.listdir(d) if f.endswith(".log"))


def topic_id(name):
    """The topic id as the broker stored it (kafka-python 2.x cannot ask Metadata v10 for it)."""
    with open(os.path.join(DATA_DIR, "__cluster_metadata", "cluster.json")) as f:
        meta = json.load(f)
    return uuid.UUID(bytes=bytes(meta["topics"][name]["id"]))


def metadata(a, topics=None):
    """Metadata v7. KafkaAdminClient's list_topics/describe_topics/describe_cluster ask v8 with
    include_*_authorized_operations and fail on this broker's answer (see broker/tests/admin.rs),
    so the cases ask v7 themselves."""
    return a.send_request(MetadataRequest[7](topics=topics, allow_auto_topic_creation=False))


def metadata_topics(a, topics=None):
    """{name: (error_code, [partition index])}"""
    return {t[1]: (t[0], sorted(p[1] for p in t[3])) for t in metadata(a, topics).topics}


def list_topics(a):
    return [name for name, (code, _) in metadata_topics(a).items() if code == NONE]


def describe_topic_configs(a, name, include_synonyms=False):
    [response] = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)], include_synonyms=include_synonyms)
    [(error_code, error_message, _type, _name, entries)] = response.resources
    check_eq(error_code, NONE, "DescribeConfigs error for %s (%s)" % (name, error_message))
    # v1/v2 entries: name, value, read_only, config_source, is_sensitive, synonyms
    return {e[0]: e for e in entries}


def incremental_alter(a, topic, ops, validate_only=False, resource_type=2):
    request = IncrementalAlterConfigsRequest_v0(
        resources=[(resource_type, topic, [(k, op, v) for (k, op, v) in ops])], validate_only=validate_only)
    response = a.send_request(request)
    [(error_code, error_message, _type, _name)] = response.responses
    return error_code, error_message or None


def error_code_of(call):
    """kafka-python raises the error class of a failed admin request; this returns its code."""
    try:
        call()
        return NONE
    except BrokerResponseError as e:
        return e.errno


def delete_records(a, offsets):
    """DeleteRecords to this node. Without `partition_leader_id` kafka-python looks leaders up
    with Metadata v8, which fails here (see `metadata`)."""
    result = a.delete_records(offsets, partition_leader_id=NODE_ID)
    return {tp: r["low_watermark"] for tp, r in result.items()}


def wait_until(condition, what):
    deadline = time.time() + BACKGROUND_WAIT_S
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise Failure("still not true after %ss: %s" % (BACKGROUND_WAIT_S, what))


def kcat(*args):
    check(shutil.which("kcat") is not None, "kcat is not installed (scripts/ci-deps/10-kcat.sh)")
    out = subprocess.run(["kcat", "-b", BOOTSTRAP] + list(args), capture_output=True, text=True, timeout=60)
    check_eq(out.returncode, 0, "kcat %s exit status (stderr: %s)" % (args, out.stderr))
    return out.stdout


# --- Cases. -----------------------------------------------------------------------------------


def case_delete_topics():
    a = admin()
    create_topic(a, "doomed", 3)
    for p in range(3):
        produce("doomed", [b"x%d" % p], partition=p)
        check(os.path.isdir(partition_dir("doomed", p)), "partition directory doomed-%d exists after produce" % p)
    check("doomed" in list_topics(a), "doomed is listed before deletion")

    response = a.delete_topics(["doomed"])
    check_eq([tuple(t) for t in response.topic_error_codes], [("doomed", NONE)], "DeleteTopics result")
    check_eq(error_code_of(lambda: a.delete_topics(["never-was"])), UNKNOWN_TOPIC_OR_PARTITION,
             "DeleteTopics of an unknown topic")
    for p in range(3):
        check(not os.path.exists(partition_dir("doomed", p)), "doomed-%d directory removed" % p)
    check("doomed" not in list_topics(a), "doomed no longer listed by Metadata")
    check_eq(metadata_topics(a, ["doomed"])["doomed"][0], UNKNOWN_TOPIC_OR_PARTITION, "Metadata for the deleted topic")
    check("doomed" not in kcat("-L"), "kcat -L no longer lists doomed")

    # The name is free again: a new topic of that name starts empty.
    create_topic(a, "doomed", 1)
    earliest, latest = earliest_and_latest("doomed", 0)
    check_eq((earliest, latest), (0, 0), "offsets of the re-created topic")

    # v6: by topic id.
    create_topic(a, "by-id", 2)
    produce("by-id", [b"y"])
    tid = topic_id("by-id")
    unknown = uuid.uuid4()
    hi, lo = uuid_halves(tid)
    uhi, ulo = uuid_halves(unknown)
    response = a.send_request(DeleteTopicsRequest_v6(
        topics=[(None, hi, lo, {}), (None, uhi, ulo, {}), ("by-id", hi, lo, {})], timeout_ms=10000, tags={}))
    results = [(r[0], r[3]) for r in response.responses]
    check_eq(results, [("by-id", NONE), (None, UNKNOWN_TOPIC_ID), ("by-id", INVALID_REQUEST)],
             "DeleteTopics v6 (by id, unknown id, name and id together)")
    check(not os.path.exists(partition_dir("by-id", 0)), "by-id-0 directory removed")
    check("by-id" not in list_topics(a), "by-id no longer listed")
    a.close()


def fill_the_disk():
    """Gives whatever room a failed append left on DATA_DIR's filesystem to a plain file beside
    DATA_DIR."""
    fd = os.open(os.path.join(os.path.dirname(DATA_DIR), "fill"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        check_eq(e.errno, 28, "filling the filesystem ends in ENOSPC")
    finally:
        os.close(fd)


def case_delete_topics_on_full_disk():
    """DATA_DIR lies on a small filesystem of its own (admin.rs mounts it). A topic fills it
    until appends fail, a file takes whatever room is left, and then deleting that topic must
    still work (its metadata write uses the broker's reserve) and give the space back."""
    a = admin()
    create_topic(a, "filler", 1)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0, retries=0,
                             request_timeout_ms=REQUEST_TIMEOUT_MS, max_block_ms=REQUEST_TIMEOUT_MS)
    value = b"f" * (256 * 1024)
    failed = None
    for i in range(1000):
        try:
            producer.send("filler", value=value, partition=0).get(timeout=REQUEST_TIMEOUT_MS / 1000)
        except KafkaStorageError as e:
            failed = i
            break
    producer.close(timeout=5)
    check(failed is not None, "an append to filler failed with KAFKA_STORAGE_ERROR before 250 MiB")

    fill_the_disk()
    check_eq(error_code_of(lambda: a.create_topics([NewTopic("no-room", num_partitions=1, replication_factor=1)])),
             KAFKA_STORAGE_ERROR, "CreateTopics on the full disk (it may not take the reserve)")

    response = a.delete_topics(["filler"])
    check_eq([tuple(t) for t in response.topic_error_codes], [("filler", NONE)], "DeleteTopics on the full disk")
    check(not os.path.exists(partition_dir("filler", 0)), "filler-0 directory removed")
    check("filler" not in list_topics(a), "filler no longer listed")

    # The space is back: a new topic takes records, and the reserve is whole again.
    create_topic(a, "after", 1)
    check_eq(produce("after", [b"a", b"b"]), [0, 1], "offsets of records produced after the deletion")
    check_eq([r.value for r in consume_from_beginning("after", 0, 2)], [b"a", b"b"], "records read back")
    reserve = os.path.join(DATA_DIR, "__cluster_metadata", "reserve")
    check(os.path.getsize(reserve) >= 1024 * 1024, "the metadata reserve is written again")
    a.close()


def case_full_disk_partition_comes_back():
    """DATA_DIR lies on a small filesystem of its own (admin.rs mounts it). Appends to a
    partition fail once the disk is full, and go on failing while it stays full. Deleting
    another topic frees space, and the same partition then takes records again, without a
    broker restart, with every acknowledged record still there."""
    a = admin()
    create_topic(a, "ballast", 1)
    check_eq(len(produce("ballast", [b"b" * (256 * 1024)] * 32)), 32, "records in ballast")
    create_topic(a, "full", 1)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0, retries=0,
                             request_timeout_ms=REQUEST_TIMEOUT_MS, max_block_ms=REQUEST_TIMEOUT_MS)
    padding = b"f" * (256 * 1024)

    def send(value):
        return producer.send("full", value=value, partition=0).get(timeout=REQUEST_TIMEOUT_MS / 1000)

    acked = []
    for i in range(1000):
        value = b"%06d" % i + padding
        try:
            send(value)
            acked.append(value)
        except KafkaStorageError:
            break
    check(0 < len(acked) < 1000, "appends to full failed with KAFKA_STORAGE_ERROR after %d records" % len(acked))
    fill_the_disk()
    try:
        send(b"while-full")
        check(False, "an append while the disk is still full succeeded")
    except KafkaStorageError:
        pass

    response = a.delete_topics(["ballast"])
    check_eq([tuple(t) for t in response.topic_error_codes], [("ballast", NONE)], "DeleteTopics of ballast")
    after = send(b"after")
    check(after.offset >= len(acked), "the record after the space came back got offset %d" % after.offset)
    values = [r.value for r in consume_from_beginning("full", 0, after.offset + 1)]
    check_eq(len(values), after.offset + 1, "records in full")
    check(values[:len(acked)] == acked, "every acknowledged record is there, in order")
    check_eq(values[-1], b"after", "the last record")
    # Between them, at most records that failed: never acknowledged, but they may have reached
    # the disk before it filled.
    check(all(v == b"while-full" or v[6:] == padding for v in values[len(acked):-1]),
          "nothing else between the acknowledged records and the last")
    producer.close(timeout=5)
    a.close()


def case_create_partitions():
    a = admin()
    create_topic(a, "grow", 1)
    produce("grow", [b"p0"])

    def grow(topic, count, assignments=None, validate_only=False):
        return error_code_of(lambda: a.create_partitions({topic: NewPartitions(count, assignments)},
                                                         validate_only=validate_only))

    check_eq(grow("grow", 5, validate_only=True), NONE, "validate_only CreatePartitions")
    check_eq(metadata_topics(a)["grow"][1], [0], "partitions after validate_only")
    check_eq(grow("grow", 3), NONE, "CreatePartitions to 3")
    check_eq(metadata_topics(a)["grow"][1], [0, 1, 2], "Metadata partitions after growing")
    check_eq(grow("grow", 2), INVALID_PARTITIONS, "shrinking")
    check_eq(grow("grow", 3), INVALID_PARTITIONS, "same count")
    check_eq(grow("nope", 3), UNKNOWN_TOPIC_OR_PARTITION, "unknown topic")
    check_eq(grow("grow", 4, [[NODE_ID + 1]]), INVALID_REPLICA_ASSIGNMENT, "assignment to another node")
    check_eq(grow("grow", 5, [[NODE_ID]]), INVALID_REPLICA_ASSIGNMENT, "one assignment for two new partitions")
    check_eq(metadata_topics(a)["grow"][1], [0, 1, 2], "refusals changed nothing")
    check_eq(grow("grow", 4, [[NODE_ID]]), NONE, "assignment to this node")

    # The new partitions take records, and the old one still has its own.
    for p in (1, 2, 3):
        [offset] = produce("grow", [b"new-%d" % p], partition=p)
        check_eq(offset, 0, "first offset in new partition %d" % p)
        records = consume_from_beginning("grow", p, 1)
        check_eq([r.value for r in records], [b"new-%d" % p], "records of new partition %d" % p)
        check(os.path.isdir(partition_dir("grow", p)), "grow-%d directory exists" % p)
    check_eq([r.value for r in consume_from_beginning("grow", 0, 1)], [b"p0"], "records of partition 0")
    a.close()


def case_configs():
    a = admin()
    create_topic(a, "cfg", 1, {"retention.ms": "3600000"})

    # DescribeConfigs: every supported config, the one set at creation with source TOPIC.
    configs = describe_topic_configs(a, "cfg", include_synonyms=True)
    check("cleanup.policy" in configs and "max.message.bytes" in configs, "all configs described: %r" % list(configs))
    name, value, read_only, source, sensitive, synonyms = configs["retention.ms"]
    check_eq((value, read_only, source, sensitive), ("3600000", False, SOURCE_TOPIC, False), "retention.ms entry")
    check_eq([(s[0], s[2]) for s in synonyms], [("retention.ms", SOURCE_TOPIC), ("log.retention.ms", SOURCE_DEFAULT)],
             "retention.ms synonyms")
    check_eq(configs["segment.bytes"][1:4], ("1073741824", False, SOURCE_DEFAULT), "segment.bytes entry")

    # AlterConfigs replaces the whole set: retention.ms set at creation goes back to its default.
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "cfg",
                                        configs={"segment.bytes": "1048576", "cleanup.policy": "compact,delete"})])
    check_eq([(e[0], e[1] or None) for e in r.resources], [(NONE, None)], "AlterConfigs result")
    configs = describe_topic_configs(a, "cfg")
    check_eq(configs["segment.bytes"][1:4], ("1048576", False, SOURCE_TOPIC), "segment.bytes after AlterConfigs")
    check_eq(configs["cleanup.policy"][1], "compact,delete", "cleanup.policy after AlterConfigs")
    check_eq(configs["retention.ms"][1:4], ("604800000", False, SOURCE_DEFAULT), "retention.ms back to default")

    # Invalid values are refused with a message naming the key, and change nothing.
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "cfg", configs={"retention.ms": "soon"})])
    [(code, message, _t, _n)] = r.resources
    check_eq(code, INVALID_CONFIG, "AlterConfigs with a bad value")
    check("retention.ms" in (message or ""), "error message names the key: %r" % message)
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "cfg", configs={"no.such.config": "1"})])
    check_eq(r.resources[0][0], INVALID_CONFIG, "AlterConfigs with an unknown key")
    check_eq(describe_topic_configs(a, "cfg")["segment.bytes"][1], "1048576", "unchanged after refusals")
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "nope", configs={"retention.ms": "1"})])
    check_eq(r.resources[0][0], UNKNOWN_TOPIC_OR_PARTITION, "AlterConfigs of an unknown topic")

    # IncrementalAlterConfigs: SET, APPEND, SUBTRACT, DELETE; the rest of the set stays.
    check_eq(incremental_alter(a, "cfg", [("retention.bytes", SET, "1000000"), ("cleanup.policy", SUBTRACT, "compact")]),
             (NONE, None), "incremental SET and SUBTRACT")
    configs = describe_topic_configs(a, "cfg")
    check_eq(configs["retention.bytes"][1:4], ("1000000", False, SOURCE_TOPIC), "retention.bytes after SET")
    check_eq(configs["cleanup.policy"][1], "delete", "cleanup.policy after SUBTRACT")
    check_eq(configs["segment.bytes"][1], "1048576", "segment.bytes kept by incremental changes")
    check_eq(incremental_alter(a, "cfg", [("cleanup.policy", APPEND, "compact")]), (NONE, None), "APPEND")
    check_eq(describe_topic_configs(a, "cfg")["cleanup.policy"][1], "delete,compact", "cleanup.policy after APPEND")
    check_eq(incremental_alter(a, "cfg", [("segment.bytes", DELETE, None)]), (NONE, None), "DELETE")
    check_eq(describe_topic_configs(a, "cfg")["segment.bytes"][1:4], ("1073741824", False, SOURCE_DEFAULT),
             "segment.bytes after DELETE")
    code, message = incremental_alter(a, "cfg", [("retention.ms", APPEND, "5")])
    check_eq(code, INVALID_CONFIG, "APPEND to a config that is not a list")
    check("retention.ms" in (message or ""), "message names the key: %r" % message)
    code, message = incremental_alter(a, "cfg", [("max.message.bytes", SET, "-5")])
    check_eq(code, INVALID_CONFIG, "SET of an invalid value")
    check("max.message.bytes" in (message or ""), "message names the key: %r" % message)
    check_eq(incremental_alter(a, "cfg", [("retention.ms", SET, "1234")], validate_only=True), (NONE, None),
             "validate_only")
    check_eq(describe_topic_configs(a, "cfg")["retention.ms"][1], "604800000", "validate_only changed nothing")

    # The broker's settings: read-only, and refusing changes.
    [response] = a.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(NODE_ID))])
    [(code, _msg, _t, _n, entries)] = response.resources
    check_eq(code, NONE, "DescribeConfigs of the broker")
    broker = {e[0]: e for e in entries}
    check(all(e[2] for e in entries), "every broker setting is read-only")
    check_eq(broker["log.retention.check.interval.ms"][1], "100", "retention check interval from the config file")
    check_eq(broker["advertised.listeners"][1], "PLAINTEXT://%s" % BOOTSTRAP, "advertised.listeners")
    check_eq(broker["log.retention.ms"][1:4], ("604800000", True, SOURCE_DEFAULT), "log.retention.ms")
    r = a.alter_configs([ConfigResource(ConfigResourceType.BROKER, str(NODE_ID), configs={"log.retention.ms": "1"})])
    check_eq(r.resources[0][0], INVALID_REQUEST, "AlterConfigs of a broker setting")
    code, _ = incremental_alter(a, str(NODE_ID), [("log.retention.ms", SET, "1")], resource_type=4)
    check_eq(code, INVALID_REQUEST, "IncrementalAlterConfigs of a broker setting")
    a.close()


def case_config_effects():
    """Config changes take effect on a partition that is open, without a restart."""
    a = admin()
    create_topic(a, "eff", 1)
    value = b"v" * 1000
    produce("eff", [value] * 100)
    check_eq(len(segments("eff", 0)), 1, "one segment at the default segment.bytes")

    # Smaller segments: later appends roll at 64 KiB.
    check_eq(incremental_alter(a, "eff", [("segment.bytes", SET, "65536")]), (NONE, None), "SET segment.bytes")
    produce("eff", [value] * 300)
    rolled = segments("eff", 0)
    check(len(rolled) >= 4, "segments rolled at the new segment.bytes: %r" % rolled)
    for f in rolled[1:-1]:
        size = os.path.getsize(os.path.join(partition_dir("eff", 0), f))
        check(size <= 65536, "sealed segment %s is %d bytes, above segment.bytes" % (f, size))
    earliest, latest = earliest_and_latest("eff", 0)
    check_eq((earliest, latest), (0, 400), "offsets before retention")

    # retention.bytes set later: the retention run deletes the oldest segments.
    check_eq(incremental_alter(a, "eff", [("retention.bytes", SET, "150000")]), (NONE, None), "SET retention.bytes")
    wait_until(lambda: earliest_and_latest("eff", 0)[0] > 0, "retention moved the log start")
    earliest, latest = earliest_and_latest("eff", 0)
    check_eq(latest, 400, "latest offset after retention")
    total = sum(os.path.getsize(os.path.join(partition_dir("eff", 0), f)) for f in segments("eff", 0)[:-1])
    check(total <= 150000 + 65536, "sealed segments total %d bytes after retention" % total)
    records = consume_from_beginning("eff", 0, latest - earliest)
    check_eq(records[0].offset if records else None, earliest, "first offset a consumer from earliest gets")
    check_eq(len(records), latest - earliest, "records from earliest")

    # cleanup.policy=compact turns retention off (compaction itself is not implemented).
    before = len(segments("eff", 0))
    check_eq(incremental_alter(a, "eff", [("cleanup.policy", SET, "compact"), ("retention.bytes", SET, "1")]),
             (NONE, None), "SET compact")
    time.sleep(1.0)  # ten retention runs at the 100 ms interval of this test's broker
    check_eq(len(segments("eff", 0)), before, "no segment deleted under cleanup.policy=compact")

    # max.message.bytes lowered: a larger batch is refused; raised again: accepted.
    check_eq(incremental_alter(a, "eff", [("max.message.bytes", SET, "2000")]), (NONE, None), "SET max.message.bytes")
    try:
        produce("eff", [b"w" * 5000])
        raise Failure("a 5000-byte record was accepted above max.message.bytes=2000")
    except MessageSizeTooLargeError:
        pass
    check_eq(incremental_alter(a, "eff", [("max.message.bytes", DELETE, None)]), (NONE, None), "DELETE max.message.bytes")
    produce("eff", [b"w" * 5000])

    # message.timestamp.type=LogAppendTime: the broker's clock stamps later batches.
    check_eq(incremental_alter(a, "eff", [("message.timestamp.type", SET, "LogAppendTime")]), (NONE, None),
             "SET message.timestamp.type")
    [offset] = produce("eff", [b"stamped"])
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        tp = TopicPartition("eff", 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got = []
        deadline = time.time() + BACKGROUND_WAIT_S
        while not got and time.time() < deadline:
            got = consumer.poll(timeout_ms=500).get(tp, [])
        check(got, "the stamped record is readable")
        check_eq((got[0].value, got[0].timestamp_type), (b"stamped", 1), "record after LogAppendTime")
    finally:
        consumer.close()
    a.close()


def case_delete_records():
    a = admin()
    create_topic(a, "dr", 2)
    offsets = produce("dr", [b"r%d" % i for i in range(100)])
    check_eq(offsets, list(range(100)), "offsets of one-record batches")

    check_eq(delete_records(a, {TopicPartition("dr", 0): 40}), {TopicPartition("dr", 0): 40},
             "low watermark after DeleteRecords(40)")
    check_eq(earliest_and_latest("dr", 0), (40, 100), "earliest and latest after DeleteRecords")
    records = consume_from_beginning("dr", 0, 60)
    check_eq([(r.offset, r.value) for r in records], [(i, b"r%d" % i) for i in range(40, 100)],
             "a consumer from earliest starts at the new log start")
    out = kcat("-C", "-t", "dr", "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o\n")
    check_eq(out.split()[:1], ["40"], "kcat -o beginning starts at the new log start")

    # Below the start: nothing changes. Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    check_eq(delete_records(a, {TopicPartition("dr", 0): 10}), {TopicPartition("dr", 0): 40},
             "DeleteRecords below the start")
    check_eq(error_code_of(lambda: delete_records(a, {TopicPartition("dr", 0): 101})), OFFSET_OUT_OF_RANGE,
             "DeleteRecords beyond the high watermark")
    check_eq(error_code_of(lambda: delete_records(a, {TopicPartition("nope", 0): 1})), UNKNOWN_TOPIC_OR_PARTITION,
             "DeleteRecords of an unknown topic")
    check_eq(earliest_and_latest("dr", 0), (40, 100), "refusals changed nothing")

    # -1: up to the high watermark; the partition reads empty from earliest.
    check_eq(delete_records(a, {TopicPartition("dr", 1): -1}), {TopicPartition("dr", 1): 0},
             "empty partition: -1 is its high watermark 0")
    produce("dr", [b"s%d" % i for i in range(5)], partition=1)
    check_eq(delete_records(a, {TopicPartition("dr", 1): -1}), {TopicPartition("dr", 1): 5},
             "-1 deletes up to the high watermark")
    check_eq(earliest_and_latest("dr", 1), (5, 5), "partition 1 offsets")
    check_eq(kcat("-C", "-t", "dr", "-p", "1", "-o", "beginning", "-e", "-q"), "", "kcat reads nothing from earliest")
    a.close()


def case_delete_records_after_restart():
    """Runs after `delete_records` and a broker restart: the log starts stay where they were set."""
    check_eq(earliest_and_latest("dr", 0), (40, 100), "partition 0 offsets after restart")
    check_eq(earliest_and_latest("dr", 1), (5, 5), "partition 1 offsets after restart")
    records = consume_from_beginning("dr", 0, 60)
    check_eq([r.offset for r in records], list(range(40, 100)), "consumer from earliest after restart")


def case_describe_cluster():
    a = admin()
    response = a.send_request(DescribeClusterRequest_v0(include_cluster_authorized_operations=False, tags={}))
    host, port = BOOTSTRAP.rsplit(":", 1)
    check_eq(response.error_code, NONE, "DescribeCluster error")
    check_eq([(b[0], b[1], b[2]) for b in response.brokers], [(NODE_ID, host, int(port))], "DescribeCluster brokers")
    check_eq(response.controller_id, NODE_ID, "DescribeCluster controller")
    check_eq(response.cluster_id, metadata(a).cluster_id, "cluster id agrees with Metadata")
    check(len(response.cluster_id) > 0, "a cluster id")
    response = a.send_request(DescribeClusterRequest_v1(include_cluster_authorized_operations=False, endpoint_type=1, tags={}))
    check_eq((response.error_code, response.endpoint_type, len(response.brokers)), (NONE, 1, 1), "DescribeCluster v1")
    response = a.send_request(DescribeClusterRequest_v1(include_cluster_authorized_operations=False, endpoint_type=2, tags={}))
    check_eq(response.error_code, UNSUPPORTED_ENDPOINT_TYPE, "DescribeCluster for controller endpoints")
    a.close()


def case_admin_client_describes_topics():
    # kafka-python's own admin calls ask Metadata (v8+) for authorized operations; the answer
    # must be real operation bits, not the "omitted" marker (which kafka-python cannot parse).
    a = admin()
    create_topic(a, "described", 3)
    check("described" in a.list_topics(), "list_topics names the topic")
    described = a.describe_topics(["described"])
    check_eq([t["topic"] for t in described], ["described"], "describe_topics")
    check_eq(len(described[0]["partitions"]), 3, "partitions described")
    check_eq(described[0]["error_code"], NONE, "describe_topics error")
    cluster = a.describe_cluster()
    check_eq(cluster["controller_id"], NODE_ID, "describe_cluster controller")
    a.close()


def case_offset_for_leader_epoch():
    a = admin()
    create_topic(a, "ep", 1)
    produce("ep", [b"e%d" % i for i in range(7)])
    for version in (2, 3, 4):
        cls = FlexibleOffsetForLeaderEpochRequest_v4 if version == 4 else OffsetForLeaderEpochRequest[version]
        # (partition, current_leader_epoch, leader_epoch)
        asked = [(0, 0, 0), (0, -1, 0), (0, 1, 0), (0, -2, 0), (0, 0, 5), (9, 0, 0)]
        if version == 4:
            topics = [("ep", [p + ({},) for p in asked], {}), ("nope", [(0, 0, 0, {})], {})]
        else:
            topics = [("ep", asked), ("nope", [(0, 0, 0)])]
        kwargs = dict(topics=topics)
        if version >= 3:
            kwargs["replica_id"] = -1
        if version == 4:
            kwargs["tags"] = {}
        response = a.send_request(cls(**kwargs))
        got = {t[0]: [tuple(p[:4]) for p in t[1]] for t in response.topics}
        # (error_code, partition, leader_epoch, end_offset)
        check_eq(got, {
            "ep": [(NONE, 0, 0, 7), (NONE, 0, 0, 7), (UNKNOWN_LEADER_EPOCH, 0, -1, -1), (FENCED_LEADER_EPOCH, 0, -1, -1),
                   (NONE, 0, -1, -1), (UNKNOWN_TOPIC_OR_PARTITION, 9, -1, -1)],
            "nope": [(UNKNOWN_TOPIC_OR_PARTITION, 0, -1, -1)],
        }, "OffsetForLeaderEpoch v%d" % version)
    a.close()


CASES = {
    "delete_topics": case_delete_topics,
    "delete_topics_on_full_disk": case_delete_topics_on_full_disk,
    "full_disk_partition_comes_back": case_full_disk_partition_comes_back,
    "create_partitions": case_create_partitions,
    "configs": case_configs,
    "config_effects": case_config_effects,
    "delete_records": case_delete_records,
    "delete_records_after_restart": case_delete_records_after_restart,
    "describe_cluster": case_describe_cluster,
    "admin_client_describes_topics": case_admin_client_describes_topics,
    "offset_for_leader_epoch": case_offset_for_leader_epoch,
}


def main():
    global BOOTSTRAP, DATA_DIR
    if len(sys.argv) != 4 or sys.argv[3] not in CASES:
        sys.exit("usage: admin_test.py BOOTSTRAP DATA_DIR {%s}" % "|".join(CASES))
    BOOTSTRAP, DATA_DIR, case = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.exit(run_case(CASES, case))


if __name__ == "__main__":
    main()
