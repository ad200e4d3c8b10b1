"""Consumer groups with real clients against a running `weir serve`.

usage: groups.py BOOTSTRAP MODE [ARGS]

modes (each prints "OK <mode> ..." on success and exits non-zero on failure):
  three-members       3 confluent-kafka consumer processes share a 6-partition topic; each
                      partition is owned exactly once; one member is SIGKILLed and its
                      partitions move to the other two after the session timeout.
  cooperative         cooperative-sticky: a second member joining takes half the partitions
                      from the first, which keeps the rest without ever losing them.
  kafka-python        a kafka-python group consumer reads everything and commits.
  aiokafka            an aiokafka group consumer reads everything and commits.
  commit GROUP TOPIC OFFSET
                      creates TOPIC (50 records) if needed; commits OFFSET for GROUP on TOPIC/0.
  committed GROUP TOPIC OFFSET
                      checks that GROUP's committed offset on TOPIC/0 is OFFSET.
  admin               confluent AdminClient: list and describe groups, list committed
                      offsets, delete a group; kafka-python: OffsetDelete.
  rebalance-time N    N members; one leaves; prints how long until the rest own every partition.
  commit-rate SECONDS [N]
                      synchronous commits from N committers (1) for SECONDS; prints commits/s.
  member ...          (internal) one consumer process of three-members / cooperative.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = sys.argv[1]
MODE = sys.argv[2]
ARGS = sys.argv[3:]
SESSION_MS = 6000


def fail(message):
    print(f"FAIL {MODE}: {message}", flush=True)
    sys.exit(1)


def create_topic(name, partitions):
    admin = AdminClient({"bootstrap.servers": BOOT})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    for f in futures.values():
        f.result(timeout=10)


def produce(topic, count, partitions, start=0):
    p = ck.Producer({"bootstrap.servers": BOOT, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % partitions)
    if p.flush(15) != 0:
        fail("produce did not finish")


class Member:
    """A consumer in its own process (so it can be SIGKILLed), reporting JSON lines."""

    def __init__(self, name, group, topic, strategy):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, BOOT, "member", group, topic, strategy, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.assignment = set()
        self.records = []
        self.revoked = []
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == "assignment":
                self.assignment = set(event["parts"])
            elif event["event"] == "revoke":
                self.revoked.append(set(event["parts"]))
            elif event["event"] == "record":
                self.records.append((event["p"], event["o"], event["v"]))
            self.events.put(event)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.05)
    fail(f"timed out waiting for {what}")


def owned_once(members, partitions):
    owned = [p for m in members for p in m.assignment]
    return sorted(owned) == list(range(partitions))


def member():
    group, topic, strategy, name = ARGS
    config = {
        "bootstrap.servers": BOOT,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": strategy,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 200,
    }
    consumer = ck.Consumer(config)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))

    def say(**event):
        print(json.dumps(event), flush=True)

    def on_assign(c, parts):
        if strategy == "cooperative-sticky":
            c.incremental_assign(parts)
        else:
            c.assign(parts)
        say(event="assignment", parts=sorted(tp.partition for tp in c.assignment()))

    def on_revoke(c, parts):
        say(event="revoke", parts=sorted(tp.partition for tp in parts))
        if strategy == "cooperative-sticky":
            c.incremental_unassign(parts)
        else:
            c.unassign()
        say(event="assignment", parts=sorted(tp.partition for tp in c.assignment()))

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while running[0]:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        say(event="record", p=m.partition(), o=m.offset(), v=m.value().decode())
    consumer.close()


def three_members():
    topic, group, partitions = "groups-three", "g-three", 6
    create_topic(topic, partitions)
    produce(topic, 600, partitions)
    members = [Member(f"m{i}", group, topic, "range") for i in range(3)]
    wait_for("3 members owning 6 partitions once", lambda: owned_once(members, partitions), 60)
    wait_for("600 records consumed", lambda: sum(len(m.records) for m in members) >= 600, 60)
    seen = sorted((p, o) for m in members for (p, o, _) in m.records)
    if seen != sorted(set(seen)) or len(seen) != 600:
        fail(f"records not consumed exactly once: {len(seen)} deliveries")
    for m in members:
        if len(m.assignment) != 2:
            fail(f"{m.name} owns {sorted(m.assignment)}")
    admin = AdminClient({"bootstrap.servers": BOOT})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if str(described.state) != "ConsumerGroupState.STABLE" or len(described.members) != 3:
        fail(f"described as {described.state} with {len(described.members)} members")
    owned = sorted(tp.partition for mem in described.members for tp in mem.assignment.topic_partitions)
    if owned != list(range(partitions)):
        fail(f"DescribeGroups shows partitions {owned}")
    listed = admin.list_consumer_groups().result(timeout=10).valid
    if group not in {g.group_id for g in listed}:
        fail(f"ListGroups does not show {group}: {[g.group_id for g in listed]}")
    victim, survivors = members[0], members[1:]
    moved = set(victim.assignment)
    killed_at = time.time()
    victim.kill()
    for m in survivors:
        m.assignment_before = set(m.assignment)
    settled = wait_for(
        "the survivors owning all 6 partitions",
        lambda: owned_once(survivors, partitions),
        SESSION_MS / 1000 + 30,
    )
    produce(topic, 60, partitions, start=600)
    wait_for(
        "records after the kill consumed by the survivors",
        lambda: sum(1 for m in survivors for (_, o, _) in m.records if o >= 100) >= 60,
        30,
    )
    for m in survivors:
        m.stop()
    print(
        f"OK three-members moved {sorted(moved)} in {settled - killed_at:.1f}s",
        flush=True,
    )


def cooperative():
    topic, group, partitions = "groups-coop", "g-coop", 6
    create_topic(topic, partitions)
    produce(topic, 60, partitions)
    first = Member("c0", group, topic, "cooperative-sticky")
    wait_for("the first member owning everything", lambda: len(first.assignment) == 6, 60)
    second = Member("c1", group, topic, "cooperative-sticky")
    wait_for("both members sharing 6 partitions", lambda: owned_once([first, second], partitions)
             and len(second.assignment) == 3, 60)
    # Incremental: the first member gave up only what moved, never its whole assignment.
    revoked = [r for r in first.revoked if r]
    if not revoked or any(len(r) == 6 for r in revoked):
        fail(f"revocations were not incremental: {revoked}")
    if set().union(*revoked) != second.assignment:
        fail(f"revoked {revoked} but the second member owns {sorted(second.assignment)}")
    for m in (first, second):
        m.stop()
    print(f"OK cooperative revoked {sorted(set().union(*revoked))}", flush=True)


def committed_offset(group, topic):
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": group})
    found = c.committed([ck.TopicPartition(topic, 0)], timeout=10)
    c.close()
    return found[0].offset


def check_group_read(client, values, group, topic):
    """A group consumer read the 40 records of a 2-partition topic and committed them."""
    if values != {f"v{i}" for i in range(40)}:
        fail(f"read {len(values)} distinct values")
    if committed_offset(group, topic) != 20:
        fail(f"committed {committed_offset(group, topic)} on partition 0, not 20")
    print(f"OK {client} group 40", flush=True)


def kafka_python_group():
    import kafka

    topic, group = "groups-kafka-python", "g-kafka-python"
    create_topic(topic, 2)
    produce(topic, 40, 2)
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=BOOT,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    values = set()
    for m in consumer:
        values.add(m.value.decode())
        if len(values) == 40:
            break
    consumer.commit()
    consumer.close()
    check_group_read("kafka-python", values, group, topic)


def aiokafka_group():
    import asyncio

    import aiokafka

    topic, group = "groups-aiokafka", "g-aiokafka"
    create_topic(topic, 2)
    produce(topic, 40, 2)

    async def run():
        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=BOOT,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        values = set()
        try:
            async with asyncio.timeout(30):
                async for m in consumer:
                    values.add(m.value.decode())
                    if len(values) == 40:
                        break
            await consumer.commit()
        finally:
            await consumer.stop()
        return values

    values = asyncio.run(run())
    check_group_read("aiokafka", values, group, topic)


def commit():
    group, topic, offset = ARGS
    admin = AdminClient({"bootstrap.servers": BOOT})
    if topic not in admin.list_topics(timeout=10).topics:
        create_topic(topic, 1)
        produce(topic, 50, 1)
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": group})
    c.commit(offsets=[ck.TopicPartition(topic, 0, int(offset))], asynchronous=False)
    c.close()
    print(f"OK commit {group} {offset}", flush=True)


def committed():
    group, topic, expected = ARGS
    found = committed_offset(group, topic)
    if found != int(expected):
        fail(f"{group} committed {found} on {topic}/0, expected {expected}")
    print(f"OK committed {group} {found}", flush=True)


def admin():
    from confluent_kafka import ConsumerGroupTopicPartitions

    topic, group = "groups-admin", "g-admin"
    create_topic(topic, 3)
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": group})
    c.commit(offsets=[ck.TopicPartition(topic, p, 10 + p) for p in range(3)], asynchronous=False)
    c.close()
    a = AdminClient({"bootstrap.servers": BOOT})

    def committed():
        request = [ConsumerGroupTopicPartitions(group)]
        result = a.list_consumer_group_offsets(request)[group].result(timeout=10)
        return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}

    if committed() != {0: 10, 1: 11, 2: 12}:
        fail(f"committed {committed()}")
    # OffsetDelete: confluent-kafka's AdminClient has no call for it; kafka-python's has.
    import kafka
    from kafka.admin import KafkaAdminClient

    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    deleted = kp.delete_group_offsets(group, [kafka.TopicPartition(topic, 1)])
    kp.close()
    if [e.__name__ for e in deleted.values()] != ["NoError"]:
        fail(f"OffsetDelete answered {deleted}")
    if committed() != {0: 10, 2: 12}:
        fail(f"after OffsetDelete: {committed()}")
    described = a.describe_consumer_groups([group])[group].result(timeout=10)
    if str(described.state) != "ConsumerGroupState.EMPTY":
        fail(f"a group with offsets only is {described.state}")
    a.delete_consumer_groups([group])[group].result(timeout=10)
    if committed():
        fail(f"after DeleteGroups: {committed()}")
    listed = {g.group_id for g in a.list_consumer_groups().result(timeout=10).valid}
    if group in listed:
        fail(f"deleted group still listed: {listed}")
    print("OK admin", flush=True)


def rebalance_time():
    n = int(ARGS[0])
    topic, group, partitions = f"groups-rebalance-{os.getpid()}", f"g-rebalance-{os.getpid()}", 2 * n
    create_topic(topic, partitions)
    members = [Member(f"r{i}", group, topic, "range") for i in range(n)]
    wait_for(f"{n} members owning {partitions} partitions", lambda: owned_once(members, partitions)
             and all(m.assignment for m in members), 120)
    leaver, rest = members[0], members[1:]
    left_at = time.time()
    leaver.stop()  # close(): LeaveGroup, so no session timeout is involved
    settled = wait_for("the rest owning every partition", lambda: owned_once(rest, partitions), 120)
    for m in rest:
        m.stop()
    print(f"OK rebalance-time {n} members {1000 * (settled - left_at):.0f} ms", flush=True)


def commit_loop(args):
    seconds, group, topic = args
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": group})
    n = 0
    start = time.time()
    while time.time() - start < seconds:
        c.commit(offsets=[ck.TopicPartition(topic, 0, n)], asynchronous=False)
        n += 1
    c.close()
    return n, time.time() - start


def commit_rate():
    import multiprocessing

    seconds = float(ARGS[0])
    procs = int(ARGS[1]) if len(ARGS) > 1 else 1
    topic = f"groups-commit-rate-{os.getpid()}"
    create_topic(topic, 1)
    jobs = [(seconds, f"g-commit-rate-{os.getpid()}-{i}", topic) for i in range(procs)]
    with multiprocessing.Pool(procs) as pool:
        results = pool.map(commit_loop, jobs)
    total = sum(n for n, _ in results)
    elapsed = max(t for _, t in results)
    for (n, _), (_, group, _) in zip(results, jobs):
        if committed_offset(group, topic) != n - 1:
            fail(f"{group}: the last commit is not the committed offset")
    print(
        f"OK commit-rate {total / elapsed:.0f} commits/s from {procs} committers "
        f"({total} in {elapsed:.1f}s)",
        flush=True,
    )


MODES = {
    "member": member,
    "three-members": three_members,
    "cooperative": cooperative,
    "kafka-python": kafka_python_group,
    "aiokafka": aiokafka_group,
    "commit": commit,
    "committed": committed,
    "admin": admin,
    "rebalance-time": rebalance_time,
    "commit-rate": commit_rate,
}

if __name__ == "__main__":
    MODES[MODE]()
    os._exit(0) if MODE == "member" else None
