"""A confluent-kafka consumer in a group, for mixed groups with WebSocket members.

usage: group_member.py BOOTSTRAP TOPIC GROUP SECONDS
Prints "ASSIGNED <partitions>" at each assignment (comma-separated, possibly empty) and
"DONE" when it leaves the group after SECONDS.
"""
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def on_assign(consumer, partitions):
    print("ASSIGNED " + ",".join(str(p.partition) for p in partitions), flush=True)


consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "partition.assignment.strategy": "range",
                     "heartbeat.interval.ms": 500, "session.timeout.ms": 6000,
                     "enable.auto.commit": False})
consumer.subscribe([topic], on_assign=on_assign)
deadline = time.time() + seconds
while time.time() < deadline:
    consumer.poll(0.2)
consumer.close()
print("DONE", flush=True)
