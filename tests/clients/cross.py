"""The other side of the Weir CLI cross-client tests (crates/weir/tests/cli.rs).

usage: cross.py BOOTSTRAP read TOPIC N        confluent-kafka reads N records from the start of
                                              every partition; prints them as JSON, one per line
       cross.py BOOTSTRAP produce TOPIC N     confluent-kafka produces N keyed records with
                                              headers and timestamps; prints what it stored
       cross.py BOOTSTRAP partitions TOPIC KEY...
                                              produces each KEY with confluent-kafka
                                              (partitioner=murmur2_random) and kafka-python
                                              (Java's default partitioner); prints
                                              {"key": [confluent, kafka-python]}
"""
import base64
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def text(b):
    """Bytes as the Weir CLI prints them: a string if UTF-8, else {"base64": ...}."""
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode()}


def record_json(topic, partition, offset, key, value, headers, timestamp):
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "key": text(key),
        "value": text(value),
        "headers": [{"key": k, "value": text(v)} for k, v in (headers or [])],
    }


def read(bootstrap, topic, n):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cross-read",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = list(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    got = []
    deadline = time.time() + 30
    while len(got) < n:
        assert time.time() < deadline, f"read {len(got)} of {n}"
        m = consumer.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append(record_json(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                               m.headers(), m.timestamp()[1]))
    consumer.close()
    for r in got:
        print(json.dumps(r))


def produce(bootstrap, topic, n):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "partitioner": "murmur2_random"})
    base = int(time.time() * 1000) - 60_000
    out = []

    def delivered(headers, err, m):
        # A delivery report carries no headers: they come from what was sent.
        assert err is None, err
        out.append(record_json(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                               headers, m.timestamp()[1]))

    for i in range(n):
        value = f"value {i}".encode() if i % 5 else bytes([0xFF, 0xFE, i % 256])
        headers = [("source", b"confluent"), ("i", str(i).encode())]
        producer.produce(topic, key=f"key-{i % 17}".encode(), value=value, headers=headers,
                         timestamp=base + i,
                         on_delivery=lambda err, m, h=headers: delivered(h, err, m))
    assert producer.flush(30) == 0
    for r in out:
        print(json.dumps(r))


def partitions(bootstrap, topic, keys):
    from kafka import KafkaProducer

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    confluent = {}

    def delivered(err, m):
        assert err is None, err
        confluent[m.key().decode()] = m.partition()

    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"c", on_delivery=delivered)
    assert producer.flush(30) == 0
    kp = KafkaProducer(bootstrap_servers=bootstrap)
    python = {}
    for key in keys:
        python[key] = kp.send(topic, key=key.encode(), value=b"p").get(timeout=30).partition
    kp.close()
    print(json.dumps({k: [confluent[k], python[k]] for k in keys}))


def main():
    bootstrap, mode, topic = sys.argv[1:4]
    if mode == "read":
        read(bootstrap, topic, int(sys.argv[4]))
    elif mode == "produce":
        produce(bootstrap, topic, int(sys.argv[4]))
    elif mode == "partitions":
        partitions(bootstrap, topic, sys.argv[4:])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
