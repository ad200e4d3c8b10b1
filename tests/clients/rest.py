"""Weir's REST API and a real Kafka client (confluent-kafka) on the same broker, both ways.

usage: rest.py BOOTSTRAP HTTP_ADDR
  1. records produced over REST (keyed, with headers and timestamps) are read by a
     confluent-kafka consumer identical: key, value, headers, timestamp, partition, offsets;
  2. records produced by confluent-kafka with each codec (none, gzip, snappy, lz4, zstd) are
     fetched over REST identical;
  3. a key produced over REST lands on the partition confluent-kafka's murmur2_random
     partitioner picks for it (the Java client's default);
  4. a consumer group's commits show over REST as committed offsets and lag, and the group
     with its member and assignment in /groups.
Prints "OK http" on success; raises otherwise.
"""
import base64
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

BOOTSTRAP, HTTP = sys.argv[1], sys.argv[2]
BASE = f"http://{HTTP}"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def unb64(s):
    return None if s is None else base64.b64decode(s)


def create(name, partitions):
    status, body = call("POST", "/topics", {"name": name, "partitions": partitions})
    assert status == 201, (status, body)


def consume_all(topic, partitions, expected_total):
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"g-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + 30
    while len(got) < expected_total and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got.append(msg)
    consumer.close()
    assert len(got) == expected_total, (len(got), expected_total)
    return got


def rest_to_kafka():
    topic = f"rest-in-{uuid.uuid4().hex[:8]}"
    create(topic, 3)
    base_ts = int(time.time() * 1000) - 60_000
    want = []
    records = []
    for i in range(60):
        key = f"key-{i % 7}".encode()
        value = f"value {i} ".encode() + bytes(range(i % 40))
        headers = [("trace", f"t{i}".encode()), ("n", str(i).encode())]
        records.append({"key": b64(key), "value": b64(value), "timestamp": base_ts + i,
                        "headers": [{"key": k, "value": b64(v)} for k, v in headers]})
        want.append((key, value, headers, base_ts + i))
    status, body = call("POST", f"/topics/{topic}/records", {"records": records})
    assert status == 200, (status, body)
    placed = body["offsets"]
    got = consume_all(topic, 3, len(want))
    by_place = {(m.partition(), m.offset()): m for m in got}
    for (key, value, headers, ts), place in zip(want, placed):
        m = by_place[(place["partition"], place["offset"])]
        assert m.key() == key and m.value() == value, (m.key(), key)
        assert [(k, bytes(v)) for k, v in m.headers()] == headers, (m.headers(), headers)
        assert m.timestamp()[1] == ts, (m.timestamp(), ts)
    # Offsets are contiguous per partition, and one key stays on one partition.
    for p in range(3):
        offsets = sorted(o["offset"] for o in placed if o["partition"] == p)
        assert offsets == list(range(len(offsets))), offsets
    by_key = {}
    for (key, *_), place in zip(want, placed):
        by_key.setdefault(key, set()).add(place["partition"])
    assert all(len(ps) == 1 for ps in by_key.values()), by_key
    return by_key


def kafka_to_rest(codec):
    topic = f"kafka-in-{codec}-{uuid.uuid4().hex[:8]}"
    create(topic, 2)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "compression.codec": codec,
                         "linger.ms": 5, "partitioner": "murmur2_random"})
    base_ts = int(time.time() * 1000) - 30_000
    want = {}
    for i in range(200):
        key = f"k{i}".encode()
        value = (f"v{i} " * (i % 9 + 1)).encode()
        headers = [("i", str(i).encode())]
        producer.produce(topic, key=key, value=value, headers=headers, timestamp=base_ts + i,
                         partition=i % 2)
        want.setdefault(i % 2, []).append((key, value, headers, base_ts + i))
    assert producer.flush(30) == 0
    for p, records in want.items():
        got = []
        offset = 0
        while len(got) < len(records):
            status, body = call("GET", f"/topics/{topic}/partitions/{p}/records?offset={offset}"
                                       f"&max_bytes=2000")
            assert status == 200, (status, body)
            assert body["records"], body
            got.extend(body["records"])
            offset = body["next_offset"]
        assert [r["offset"] for r in got] == list(range(len(records)))
        for r, (key, value, headers, ts) in zip(got, records):
            assert unb64(r["key"]) == key and unb64(r["value"]) == value, (codec, r, key)
            assert [(h["key"], unb64(h["value"])) for h in r["headers"]] == headers
            assert r["timestamp"] == ts, (codec, r["timestamp"], ts)


def same_partition_for_keys(by_key_rest):
    """confluent-kafka's murmur2_random puts each key where REST put it."""
    topic = f"keys-{uuid.uuid4().hex[:8]}"
    create(topic, 3)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "partitioner": "murmur2_random"})
    placed = {}

    def report(err, msg):
        assert err is None, err
        placed[msg.key()] = msg.partition()

    for key in by_key_rest:
        producer.produce(topic, key=key, value=b"x", on_delivery=report)
    assert producer.flush(30) == 0
    for key, partitions in by_key_rest.items():
        assert placed[key] == next(iter(partitions)), (key, placed[key], partitions)


def group_offsets_and_lag():
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    create(topic, 2)
    records = [{"value": b64(b"r%d" % i), "partition": i % 2} for i in range(10)]
    status, _ = call("POST", f"/topics/{topic}/records", {"records": records})
    assert status == 200
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "client.id": "lag-checker"})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + 30
    while seen < 6 and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        seen += 1
    # Commit 3 of partition 0's 5 and 1 of partition 1's 5.
    consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 1)],
                    asynchronous=False)
    status, listed = call("GET", "/groups")
    assert status == 200 and any(g["group"] == group for g in listed["groups"]), listed
    status, described = call("GET", f"/groups/{group}")
    assert status == 200, described
    assert described["state"] == "Stable", described
    assert described["protocol_type"] == "consumer"
    member = described["members"][0]
    assert member["client_id"] == "lag-checker", member
    assert member["assignment"] == [{"topic": topic, "partitions": [0, 1]}], member
    status, offsets = call("GET", f"/groups/{group}/offsets")
    assert status == 200, offsets
    got = {(o["topic"], o["partition"]): (o["committed_offset"], o["high_watermark"], o["lag"])
           for o in offsets["offsets"]}
    assert got == {(topic, 0): (3, 5, 2), (topic, 1): (1, 5, 4)}, got
    assert offsets["lag"] == 6
    consumer.close()


def main():
    by_key = rest_to_kafka()
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        kafka_to_rest(codec)
    same_partition_for_keys(by_key)
    group_offsets_and_lag()
    print("OK http")


main()
