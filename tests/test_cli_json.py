"""`dial read --json` prints each message's envelope (kcat -J), and kcat's habits:
`--offset beginning|end|N|-N` and `--eof` for Kafka, `--count N`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from typing import Any

from dial import Dial
from dial.cli import kafka_offset, main
from tests.servers.base import ensure_binary
from tests.servers.brokers import kafka, mosquitto

__all__ = ["kafka", "mosquitto"]  # fixtures used by name


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def produce(port: int, topic: str, count: int) -> None:
    with Dial(f"kafka://127.0.0.1:{port}/{topic}|confirm=true", 10, raise_errors=True) as conn:
        for index in range(count):
            assert conn.write(f'{{"n":{index}}}', 10, key=f"k{index % 2}", headers={"h": "v"})


def lines(capsys: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_offset_is_written_into_the_kafka_query() -> None:
    assert kafka_offset("kafka://h/t", "beginning") == "kafka://h/t?offset=beginning"
    assert (
        kafka_offset("kafka://h/t?group=g&offset=latest|reconnect=true", "-5")
        == "kafka://h/t?group=g&offset=-5|reconnect=true"
    )


def test_kafka_envelope_fields(kafka: int, capsys: Any) -> None:
    topic = unique("json-")
    produce(kafka, topic, 3)
    address = f"kafka://127.0.0.1:{kafka}/{topic}"
    assert main(["read", address, "--json", "--offset", "beginning", "--count", "3"]) == 0
    records = lines(capsys)
    assert [json.loads(r["payload"])["n"] for r in records] == [0, 1, 2]
    for index, record in enumerate(records):
        assert record["topic"] == topic
        assert record["partition"] == records[0]["partition"]
        assert record["offset"] == index
        assert record["key"] == f"k{index % 2}"
        assert record["headers"] == {"h": "v"}
        assert record["source"].startswith("kafka://127.0.0.1:")
        assert record["kind"] == "text"
        assert abs(record["ts"] - time.time()) < 600
        assert record["received_at"] >= record["ts"] - 5


def test_eof_ends_at_the_end_of_the_partitions(kafka: int, capsys: Any) -> None:
    topic = unique("eof-")
    produce(kafka, topic, 5)
    address = f"kafka://127.0.0.1:{kafka}/{topic}"
    assert main(["read", address, "--json", "--offset", "beginning", "--eof"]) == 0
    assert [r["offset"] for r in lines(capsys)] == [0, 1, 2, 3, 4]
    assert main(["read", address, "--json", "--offset", "-2", "--eof"]) == 0
    assert [r["offset"] for r in lines(capsys)] == [3, 4]
    assert main(["read", address, "--offset", "3", "--eof"]) == 0  # plain: payloads only
    assert capsys.readouterr().out.splitlines() == ['{"n":3}', '{"n":4}']


def test_eof_and_offset_are_kafka_only(capsys: Any) -> None:
    assert main(["read", "ws://127.0.0.1:9/x", "--eof"]) == 1
    assert "--eof" in capsys.readouterr().err
    assert main(["read", "ws://127.0.0.1:9/x", "--offset", "beginning"]) == 1
    assert "--offset applies to kafka://" in capsys.readouterr().err
    assert main(["read", "kafka://127.0.0.1:9/t", "--offset", "yesterday"]) == 1
    assert "expected beginning, end, N or -N" in capsys.readouterr().err


def test_mqtt_wildcard_envelopes_name_their_topic(mosquitto: int, capsys: Any) -> None:
    base = unique("nc")
    address = f"mqtt://127.0.0.1:{mosquitto}?topic={base}/+/btc"
    publisher = ensure_binary("mosquitto_pub", "mosquitto-clients")

    def publish() -> None:
        time.sleep(1.0)  # after the subscription
        for venue, value in (("a", "1"), ("b", "2")):
            subprocess.run(
                [publisher, "-p", str(mosquitto), "-t", f"{base}/{venue}/btc", "-m", value],
                check=True,
                timeout=10,
            )

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        assert main(["read", address, "--json", "-n", "2", "--timeout", "10000"]) == 0
    finally:
        thread.join()
    records = lines(capsys)
    assert [(r["topic"], r["payload"]) for r in records] == [
        (f"{base}/a/btc", "1"),
        (f"{base}/b/btc", "2"),
    ]
