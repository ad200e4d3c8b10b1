"""Produce keyed records with headers through a real Kafka client and read them back by
assignment, checking key, value, headers, timestamp, partition and contiguous offsets.

usage: roundtrip.py BOOTSTRAP CLIENT [CODEC]
  CLIENT: confluent | kafka-python | aiokafka
Prints "OK <client> <codec> <records>" on success; raises otherwise.
"""
import asyncio
import sys
import time
import uuid

N = 300
PARTITIONS = 3


def expected(topic_tag):
    base = int(time.time() * 1000) - 60_000
    out = []
    for i in range(N):
        out.append(
            (
                i % PARTITIONS,
                f"key-{i}".encode(),
                f"{topic_tag} value {i} ".encode() + bytes(range(i % 50)),
                [("trace", f"t{i}".encode()), ("n", str(i).encode())],
                base + i,
            )
        )
    return out


def check(got, want, client):
    """got: list of (partition, offset, key, value, headers, timestamp)."""
    partitions = sorted({w[0] for w in want})
    by_partition = {}
    for p, offset, key, value, headers, ts in got:
        by_partition.setdefault(p, []).append((offset, key, value, headers, ts))
    for p in partitions:
        records = sorted(by_partition.get(p, []))
        want_p = [w for w in want if w[0] == p]
        assert len(records) == len(want_p), f"{client}: partition {p}: {len(records)} != {len(want_p)}"
        for expected_offset, ((offset, key, value, headers, ts), w) in enumerate(zip(records, want_p)):
            assert offset == expected_offset, f"{client}: offsets not contiguous in {p}: {offset}"
            assert key == w[1], (client, key, w[1])
            assert value == w[2], (client, value, w[2])
            assert [(k, bytes(v)) for k, v in headers] == w[3], (client, headers, w[3])
            assert ts == w[4], (client, ts, w[4])


def run_confluent(bootstrap, codec):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"confluent-{codec}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    futures[topic].result(timeout=30)
    want = expected(topic)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5, "acks": "all"}
    )
    errors = []
    for p, key, value, headers, ts in want:
        producer.produce(
            topic, value=value, key=key, partition=p, headers=headers, timestamp=ts,
            on_delivery=lambda err, msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0, "undelivered records"
    assert not errors, errors
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused-by-assign", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = []
    deadline = time.time() + 30
    while len(got) < N and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise RuntimeError(msg.error())
        got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or [], msg.timestamp()[1]))
    consumer.close()
    check(got, want, "confluent")


def run_kafka_python(bootstrap, codec):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = f"kafkapython-{codec}-{uuid.uuid4().hex[:8]}"
    want = expected(topic)
    # kafka-python 3 turns idempotence on by default: InitProducerId and sequence numbers.
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5,
        compression_type=None if codec == "none" else codec,
    )
    # The first send's metadata request auto-creates the topic with 1 partition.
    futures = [
        producer.send(topic, value=value, key=key, partition=0, headers=headers, timestamp_ms=ts)
        for _, key, value, headers, ts in want
    ]
    producer.flush(30)
    for f in futures:
        f.get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    got = []
    deadline = time.time() + 30
    while len(got) < N and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for r in records:
                got.append((r.partition, r.offset, r.key, r.value, r.headers, r.timestamp))
    consumer.close()
    check(got, [(0, *w[1:]) for w in want], "kafka-python")


async def run_aiokafka(bootstrap, codec):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = f"aiokafka-{codec}-{uuid.uuid4().hex[:8]}"
    want = expected(topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5,
        compression_type=None if codec == "none" else codec,
    )
    await producer.start()
    try:
        for _, key, value, headers, ts in want:
            await producer.send(topic, value=value, key=key, partition=0, headers=headers, timestamp_ms=ts)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    got = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.time() + 30
        while len(got) < N and time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    got.append((0, r.offset, r.key, r.value, list(r.headers), r.timestamp))
    finally:
        await consumer.stop()
    check(got, [(0, *w[1:]) for w in want], "aiokafka")


def main():
    bootstrap, client = sys.argv[1], sys.argv[2]
    codec = sys.argv[3] if len(sys.argv) > 3 else "none"
    if client == "confluent-admin":
        run_confluent_admin(bootstrap)
        return
    if client == "confluent":
        run_confluent(bootstrap, codec)
    elif client == "kafka-python":
        run_kafka_python(bootstrap, codec)
    elif client == "aiokafka":
        asyncio.run(run_aiokafka(bootstrap, codec))
    else:
        raise SystemExit(f"unknown client {client}")
    print(f"OK {client} {codec} {N}")


def run_confluent_admin(bootstrap):
    """Config APIs and DeleteRecords through confluent-kafka's AdminClient."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (
        AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"admin-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    resource = ConfigResource(ResourceType.TOPIC, topic)

    def describe():
        result = admin.describe_configs([resource])[resource].result(30)
        return {k: (v.value, v.is_default) for k, v in result.items()}

    configs = describe()
    assert configs["retention.ms"] == ("604800000", True), configs["retention.ms"]
    assert configs["cleanup.policy"][0] == "delete"

    changes = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("flush.messages", "1", incremental_operation=AlterConfigOpType.SET),
    ])
    admin.incremental_alter_configs([changes])[changes].result(30)
    configs = describe()
    assert configs["retention.ms"] == ("1000", False), configs["retention.ms"]
    assert configs["flush.messages"] == ("1", False), configs["flush.messages"]

    bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
    ])
    try:
        admin.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("cleanup.policy=compact was accepted")
    except Exception as e:  # KafkaException(INVALID_CONFIG)
        assert "INVALID_CONFIG" in str(e) or "compact" in str(e), e

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0
    deleted = admin.delete_records([TopicPartition(topic, 0, 5)])
    result = list(deleted.values())[0].result(30)
    assert result.low_watermark == 5, result

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (5, 10), (low, high)
    consumer.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
    got = []
    deadline = time.time() + 30
    while len(got) < 5 and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            got.append((msg.offset(), msg.value()))
    consumer.close()
    assert [o for o, _ in got] == [5, 6, 7, 8, 9], got
    print("OK confluent-admin")


if __name__ == "__main__":
    main()
