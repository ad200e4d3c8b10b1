"""Two confluent-kafka producers at once against a Weir broker whose config limits client id
"limited" to a produce quota (crates/weir/tests/clients.rs).

usage: quota.py BOOTSTRAP TOPIC SECONDS

Both produce 10 KB values for SECONDS (after a 1 s warm-up that is not counted): "limited"
as fast as it can, "free" paced at 20 MB/s (twenty times the quota; enough to show it is not
held back, without writing gigabytes). Prints one JSON object: per client id, the bytes delivered in the measured span,
bytes/s, and the throttle events librdkafka reported (count and total ms).
"""
import json
import sys
import threading
import time

from confluent_kafka import Producer

bootstrap, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
VALUE = b"v" * 10_000
WARMUP = 1.0
PACE = {"limited": None, "free": 20_000_000}


def run(client_id, out):
    throttles = []
    delivered = [0]
    start = time.monotonic()
    measure_from = start + WARMUP
    measure_to = measure_from + seconds

    def on_delivery(err, msg):
        if err is None and measure_from <= time.monotonic() <= measure_to:
            delivered[0] += len(msg.value())

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "linger.ms": 5,
            "queue.buffering.max.kbytes": 4096,
            "throttle_cb": lambda ev: throttles.append(ev.throttle_time * 1000.0),
        }
    )
    pace = PACE[client_id]
    sent = 0
    while time.monotonic() < measure_to:
        if pace is not None and sent > pace * (time.monotonic() - start):
            time.sleep(0.001)
            continue
        try:
            p.produce(topic, VALUE, on_delivery=on_delivery)
            sent += len(VALUE)
            p.poll(0)
        except BufferError:
            p.poll(0.01)
    p.flush(30)
    out[client_id] = {
        "bytes": delivered[0],
        "bytes_per_s": delivered[0] / seconds,
        "throttle_events": len(throttles),
        "throttle_ms": sum(throttles),
    }


results = {}
threads = [threading.Thread(target=run, args=(c, results)) for c in ("limited", "free")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
