"""`benchmarks/pipe.py` kept from rotting: the script runs with tiny counts against the real
Kafka-API broker and ClickHouse, both bridges raw and through `dial.pipe`, and every message
is found at the destination; a round that lost messages never becomes a result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pipe import Result, Round
from tests.servers.brokers import kafka
from tests.servers.databases import clickhouse_server

__all__ = ["clickhouse_server", "kafka"]  # fixtures by name

ROOT = Path(__file__).resolve().parents[1]
COUNT = 300
BRIDGES = ("ws -> kafka", "kafka -> clickhouse")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_both_bridges_run_raw_and_dial_and_everything_arrives(
    kafka: int, clickhouse_server: int, tmp_path: Path
) -> None:
    out = tmp_path / "pipe.json"
    argv = [
        sys.executable, str(ROOT / "benchmarks" / "pipe.py"),
        "--count", str(COUNT), "--rounds", "1",
        "--kafka-port", str(kafka), "--clickhouse-port", str(clickhouse_server),
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nproc" in done.stdout and "Python" in done.stdout  # the machine is printed
    report: dict[str, Any] = json.loads(out.read_text())
    for bridge in BRIDGES:
        found = report["bridges"][bridge]
        assert {r["side"] for r in found["rounds"]} == {"raw", "dial"}
        for done_round in found["rounds"]:
            assert (done_round["arrived"], done_round["extra"]) == (COUNT, 0), done_round
        assert found["raw"] > 0 and found["dial"] > 0
        assert found["ratio"] == pytest.approx(found["dial"] / found["raw"])
        assert f"{bridge:<22}" in done.stdout  # its line in the summary table


def test_a_round_that_lost_messages_never_counts() -> None:
    result = Result("ws -> kafka", "")
    result.rounds += [
        Round("raw", 1000, arrived=1000, seconds=1.0),
        Round("dial", 1000, arrived=999, seconds=0.1, dropped=1),  # fast, but lossy
        Round("dial", 1000, arrived=1000, seconds=2.0),
    ]
    best = result.best("dial")
    assert best is not None and best.speed == 500.0
    assert result.ratio() == 0.5
    assert "LOSS" in result.rounds[1].line()


def test_without_a_loss_free_round_there_is_no_ratio() -> None:
    result = Result("kafka -> clickhouse", "")
    result.rounds += [
        Round("raw", 10, arrived=10, seconds=1.0),
        Round("dial", 10, arrived=10, seconds=1.0, note="the pipe never wrote them all"),
    ]
    assert result.best("dial") is None and result.ratio() is None


def test_paired_ratios_compare_only_rounds_run_back_to_back_without_loss() -> None:
    result = Result("kafka -> clickhouse", "")
    result.rounds += [
        Round("raw", 10, arrived=10, seconds=1.0, number=0),
        Round("dial", 10, arrived=10, seconds=2.0, number=0),
        Round("dial", 10, arrived=9, seconds=1.0, number=1),  # lossy: its round has no pair
        Round("raw", 10, arrived=10, seconds=1.0, number=1),
    ]
    assert result.paired() == [0.5]
