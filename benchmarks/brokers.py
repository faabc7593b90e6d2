"""Publish + consume N 100-byte messages per broker, through Dial and through the raw client
library, in one run; prints msg/s both ways and the ratio (target: Dial / raw >= 0.8).

    python benchmarks/brokers.py [--count 100000] [--only mqtt,nats,amqp,kafka]

Each side publishes N messages to a fresh topic/queue it is itself subscribed to and the
clock stops when the last one has been consumed: by the library's callback / fetch loop for
the raw side, by a reader thread calling `conn.read()` for Dial (the way a strategy reads).
The raw side uses each library the way its documentation shows: paho-mqtt with
`loop_start()`, nats-py `publish` + subscription callback, aio-pika `default_exchange.publish`
+ `queue.consume`, aiokafka `producer.send` + `consumer.getmany`.
Brokers must be running on their default ports (see tests/servers/brokers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable

import aio_pika
import nats
import paho.mqtt.client as paho
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from dial import Dial, last_error

BODY = b"x" * 100
LIMIT = 120.0  # seconds any one side may take before it is reported as stuck
IDLE = 2.0


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# -- raw library baselines ------------------------------------------------------------------------


def raw_mqtt(count: int) -> tuple[float, int]:
    topic = fresh("bench/raw/")
    got = 0
    last = 0.0
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal got, last
        got += 1
        last = time.perf_counter()

    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.subscribe(topic)
    subscribed.wait(10)
    start = time.perf_counter()
    for _ in range(count):
        client.publish(topic, BODY)
    wait_until_quiet(lambda: got, count)
    client.disconnect()
    client.loop_stop()
    return last - start, got


def wait_until_quiet(progress: Callable[[], int], count: int) -> None:
    """Until `count` arrived, or nothing arrived for IDLE seconds (a broker may drop QoS 0
    messages for a slow subscriber: Mosquitto keeps 1000 per client by default)."""
    seen, since = -1, time.monotonic()
    deadline = since + LIMIT
    while time.monotonic() < deadline:
        now = progress()
        if now >= count:
            return
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > IDLE:
            return
        time.sleep(0.01)


def raw_nats(count: int) -> tuple[float, int]:
    async def run() -> tuple[float, int]:
        client = await nats.connect("nats://127.0.0.1:4222")
        subject = fresh("bench.raw.")
        got = 0
        done = asyncio.Event()

        async def on_message(_msg: object) -> None:
            nonlocal got
            got += 1
            if got == count:
                done.set()

        await client.subscribe(subject, cb=on_message, pending_msgs_limit=count + 1)
        await client.flush()
        start = time.perf_counter()
        for _ in range(count):
            await client.publish(subject, BODY)
        await asyncio.wait_for(done.wait(), LIMIT)
        elapsed = time.perf_counter() - start
        await client.close()
        return elapsed, count

    return asyncio.run(run())


def raw_amqp(count: int) -> tuple[float, int]:
    async def run() -> tuple[float, int]:
        connection = await aio_pika.connect(host="127.0.0.1")
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(fresh("bench_raw_"), auto_delete=True)
        got = 0
        done = asyncio.Event()

        async def on_message(_msg: object) -> None:
            nonlocal got
            got += 1
            if got == count:
                done.set()

        await queue.consume(on_message, no_ack=True)
        start = time.perf_counter()
        for _ in range(count):
            await channel.default_exchange.publish(aio_pika.Message(BODY), queue.name)
        await asyncio.wait_for(done.wait(), LIMIT)
        elapsed = time.perf_counter() - start
        await connection.close()
        return elapsed, count

    return asyncio.run(run())


def raw_kafka(count: int) -> tuple[float, int]:
    async def run() -> tuple[float, int]:
        topic = fresh("bench_raw_")
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092")
        await producer.start()
        partitions = sorted(await producer.partitions_for(topic))
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9092", fetch_max_wait_ms=100)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        async def consume() -> None:
            got = 0
            while got < count:
                batches = await consumer.getmany(timeout_ms=1000)
                got += sum(len(records) for records in batches.values())

        reader = asyncio.ensure_future(consume())
        start = time.perf_counter()
        for _ in range(count):
            await producer.send(topic, BODY, partition=partitions[0])
        await asyncio.wait_for(reader, LIMIT)
        elapsed = time.perf_counter() - start
        await consumer.stop()
        await producer.stop()
        return elapsed, count

    return asyncio.run(run())


# -- the same through Dial ------------------------------------------------------------------------


def through_dial(address: str, count: int) -> tuple[float, int, int]:
    """Seconds until the reader thread consumed the last message, messages that reached the
    connection, and how many of those the ring buffer dropped because the reader lagged."""
    conn = Dial(address, timeout=30)
    if conn is None:
        raise SystemExit(f"Dial({address!r}) failed: {last_error()}")
    last = 0.0
    stop = threading.Event()

    def reader() -> None:
        nonlocal last
        while not stop.is_set():
            message = conn.read(100)
            if message:
                last = time.perf_counter()
            elif message == "":
                break

    thread = threading.Thread(target=reader)
    thread.start()
    payload = BODY.decode()
    start = time.perf_counter()
    for _ in range(count):
        conn.write(payload)
    wait_until_quiet(lambda: conn.stats().messages_in, count)
    while conn.stats().buffered:  # let the reader finish what arrived
        time.sleep(0.01)
    stop.set()
    thread.join()
    stats = conn.stats()
    conn.close()
    return last - start, stats.messages_in, stats.dropped


CASES: dict[str, tuple[Callable[[int], tuple[float, int]], Callable[[], str]]] = {
    "mqtt": (raw_mqtt, lambda: f"mqtt://127.0.0.1:1883?topic={fresh('bench/dial/')}"),
    "nats": (raw_nats, lambda: f"nats://127.0.0.1:4222?topic={fresh('bench.dial.')}"),
    "amqp": (raw_amqp, lambda: f"amqp://guest:guest@127.0.0.1:5672/?queue={fresh('bench_')}"),
    "kafka": (raw_kafka, lambda: f"kafka://127.0.0.1:9092/{fresh('bench_dial_')}"),
}


PORTS = {"mqtt": 1883, "nats": 4222, "amqp": 5672, "kafka": 9092}


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    count = args.count
    print(f"{count} messages of {len(BODY)} bytes, publish + consume, per broker")
    print("msg/s = messages consumed / seconds from the first publish to the last one consumed")
    header = f"{'broker':<7}{'raw msg/s':>11}{'lost':>7}{'dial msg/s':>12}{'lost':>7}"
    print(f"{header}{'dropped':>9}{'ratio':>7}  target 0.8")
    for name in args.only.split(","):
        if not listening(PORTS[name]):
            print(f"{name:<7}skipped: nothing listens on 127.0.0.1:{PORTS[name]}", flush=True)
            continue
        raw, address = CASES[name]
        raw_seconds, raw_got = raw(count)
        dial_seconds, dial_got, dropped = through_dial(address(), count)
        raw_rate, dial_rate = raw_got / raw_seconds, dial_got / dial_seconds
        ratio = dial_rate / raw_rate
        print(
            f"{name:<7}{raw_rate:>11,.0f}{count - raw_got:>7}{dial_rate:>12,.0f}"
            f"{count - dial_got:>7}{dropped:>9}{ratio:>7.2f}  {'ok' if ratio >= 0.8 else 'BELOW'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
