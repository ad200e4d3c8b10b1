"""Exactly-once per partition under connection faults.

usage: exactly_once.py PROXY_PORT BROKER RECORDS

Runs a TCP proxy on 127.0.0.1:PROXY_PORT in front of BROKER (the broker advertises the proxy,
so every client connection goes through it) that cuts a random live connection every
200-1000 ms, and also cuts a connection instead of passing on a response (1 in 40): the
broker has done the work, the client never hears of it and retries. An idempotent confluent-kafka producer (acks=all) sends RECORDS sequence-numbered
records over 4 partitions through it. Then, without faults, a consumer reads every partition
back: each record must be there exactly once, in order. Prints
"OK exactly-once <records> records, <cuts> cuts, 0 duplicates, 0 gaps".
"""

import asyncio
import random
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

PROXY_PORT = int(sys.argv[1])
BROKER_HOST, BROKER_PORT = sys.argv[2].rsplit(":", 1)
RECORDS = int(sys.argv[3])
PARTITIONS = 4
TOPIC = "exactly-once"
BOOT = f"127.0.0.1:{PROXY_PORT}"


def fail(message):
    print(f"FAIL exactly-once: {message}", flush=True)
    sys.exit(1)


class Proxy:
    def __init__(self):
        self.links = set()
        self.cutting = True
        self.cuts = 0
        self.lost_responses = 0
        self.rng = random.Random(int(time.time()))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        server = await asyncio.start_server(self._accept, "127.0.0.1", PROXY_PORT)
        self.ready.set()
        rng = self.rng
        async with server:
            while True:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                if self.cutting and self.links:
                    victim = rng.choice(sorted(self.links, key=id))
                    self.links.discard(victim)
                    for writer in victim:
                        writer.transport.abort()
                    self.cuts += 1

    async def _accept(self, client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection(BROKER_HOST, int(BROKER_PORT))
        except OSError:
            client_writer.transport.abort()
            return
        link = (client_writer, broker_writer)
        self.links.add(link)

        async def pump(reader, writer, responses):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    if responses and self.cutting and self.rng.random() < 1 / 40:
                        self.cuts += 1
                        self.lost_responses += 1
                        break
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                client_writer.transport.abort()
                broker_writer.transport.abort()

        await asyncio.gather(
            pump(client_reader, broker_writer, False), pump(broker_reader, client_writer, True)
        )
        self.links.discard(link)


def main():
    proxy = Proxy()
    proxy.cutting = False
    admin = AdminClient({"bootstrap.servers": BOOT})
    for f in admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS)]).values():
        f.result(timeout=30)
    proxy.cutting = True

    errors = []
    acked = [0]

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[0] += 1

    producer = ck.Producer(
        {
            "bootstrap.servers": BOOT,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 500,
            "message.timeout.ms": 300000,
            "socket.timeout.ms": 10000,
            "retry.backoff.ms": 20,
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 200,
            "log_level": 3,
        }
    )
    started = time.time()
    for i in range(RECORDS):
        partition = i % PARTITIONS
        while True:
            try:
                producer.produce(TOPIC, key=str(partition), value=str(i // PARTITIONS), partition=partition,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 2000 == 0:
            # Paced over ~10 s, so that many cuts land while records are in flight.
            producer.poll(0)
            time.sleep(0.1)
    if producer.flush(300) != 0:
        fail(f"{len(producer)} records still unacknowledged")
    produced_in = time.time() - started
    proxy.cutting = False
    if errors:
        fail(f"{len(errors)} delivery errors, first: {errors[0]}")
    if acked[0] != RECORDS:
        fail(f"{acked[0]} of {RECORDS} acknowledged")
    if proxy.cuts < 10 or proxy.lost_responses < 3:
        fail(f"only {proxy.cuts} cuts, {proxy.lost_responses} lost responses: the test did not test")

    consumer = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "exactly-once-check",
                            "enable.auto.commit": False})
    per_partition = RECORDS // PARTITIONS
    duplicates = gaps = 0
    for partition in range(PARTITIONS):
        consumer.assign([ck.TopicPartition(TOPIC, partition, 0)])
        expected = 0
        deadline = time.time() + 120
        while expected < per_partition and time.time() < deadline:
            for m in consumer.consume(1000, 1.0):
                if m.error():
                    continue
                value = int(m.value())
                if value < expected:
                    duplicates += 1
                elif value > expected:
                    gaps += value - expected
                    expected = value + 1
                else:
                    expected += 1
        if expected != per_partition:
            fail(f"partition {partition}: read up to {expected} of {per_partition}")
        _, high = consumer.get_watermark_offsets(ck.TopicPartition(TOPIC, partition), timeout=10)
        if high != per_partition:
            fail(f"partition {partition} holds {high} records, expected {per_partition}")
    consumer.close()
    if duplicates or gaps:
        fail(f"{duplicates} duplicates, {gaps} gaps")
    print(
        f"OK exactly-once {RECORDS} records, {proxy.cuts} cuts ({proxy.lost_responses} lost "
        f"responses), 0 duplicates, 0 gaps "
        f"(produced in {produced_in:.1f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
