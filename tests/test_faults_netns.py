"""Real network faults: the server runs in its own network namespace, the client (Dial) in the
root one, and the wire between them is impaired for real (`tests.servers.netns`: kernel netem
where the kernel has it, else a user-space netem on a TUN device). The kernels on both ends see
delayed, lost, reordered and rate-capped packets and retransmit by themselves.

What must hold: a reliable stream (a WebSocket feed, NATS) delivers every message in order
through 200 ms of delay each way, 5% loss, 25% reordering and a 1 Mbit/s cap, without a
false heartbeat alarm; and after a total outage longer than the heartbeat deadline the client
notices, and comes back within `interval` + the heartbeat deadline of the wire healing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dial
from dial import Dial
from tests.servers.base import ensure_binary
from tests.servers.netns import BLACKOUT, CLEAR, NetnsPair, Shape, probe
from tests.test_faults_proxy import Footprint, assert_no_traceback, unique

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings(
        "error::pytest.PytestUnraisableExceptionWarning",
        "error::pytest.PytestUnhandledThreadExceptionWarning",
    ),
]

BAD_WIRE = Shape(delay_ms=200, loss_pct=5, reorder_pct=25, rate_kbit=1000)
INTERVAL = 0.2  # s between reconnect attempts
PING, PONG = 0.5, 3.0  # on the bad wire: the pong deadline covers a few retransmissions
OUTAGE_PONG = 1.5  # the outage tests start on a clear wire: a tighter deadline is safe
DEADLINE = PING + OUTAGE_PONG  # what the outage tests hold the client to
HANDSHAKE = 0.5  # s for TCP + protocol handshake once the wire is clear
SLACK = 0.5
FEED_PORT, NATS_PORT = 8765, 4222
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def timing_report() -> Iterator[None]:
    """Print what was measured (seen with `pytest -s`)."""
    yield
    for key in sorted(TIMINGS):
        print(f"{key:45s} {TIMINGS[key]:7.3f} s")


def need_netns() -> None:
    """Skip where the machine cannot do this; in CI fail instead, since every machine of
    this project's kind (root, CONFIG_VETH, CONFIG_TUN) can. netem itself is not required:
    the user-space wire stands in for it."""
    support = probe()
    if support.usable:
        return
    reason = f"network namespaces unusable here: {support.describe()}"
    if os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pair() -> Iterator[NetnsPair]:
    need_netns()
    with NetnsPair() as instance:
        feed = [sys.executable, "-m", "tests.servers.netns", "feed"]
        instance.spawn([*feed, "--host", instance.server_ip, "--port", str(FEED_PORT)])
        nats = ensure_binary("nats-server", "nats-server")
        instance.spawn([nats, "-a", instance.server_ip, "-p", str(NATS_PORT)])
        for port in (FEED_PORT, NATS_PORT):
            assert instance.wait_port(port), f"nothing listens on {instance.server_ip}:{port}"
        for url in (  # imports, the reactor thread: started once, not leaks
            f"ws://{instance.server_ip}:{FEED_PORT}/",
            f"nats://{instance.server_ip}:{NATS_PORT}?topic=warm",
        ):
            conn = Dial(url, 10)
            assert conn is not None, dial.last_error()
            conn.close()
        yield instance


@pytest.fixture(autouse=True)
def clear_wire(pair: NetnsPair) -> Iterator[None]:
    pair.shape(CLEAR)
    yield
    pair.shape(CLEAR)


def options(pong: float = PONG) -> str:
    return f"reconnect=true&interval={INTERVAL * 1000:g}&ping={PING}&pong={pong}"


def test_machine_support_is_known() -> None:
    """Not a fault test: records what this machine offers (see the report), and fails in CI
    when namespaces stop working on a machine kind that has them."""
    need_netns()
    support = probe()
    print(f"\nnetns support: {support.describe()}")
    assert support.netns and support.veth


def assert_wire_was_bad(pair: NetnsPair, before: dict[str, int] | None) -> None:
    """The wire really dropped and reordered packets meanwhile (where it counts them)."""
    after = pair.counters()
    if before is None or after is None:
        return
    done = {key: after[key] - before[key] for key in after}
    assert done["dropped"] > 0 and done["reordered"] > 0, f"the wire was not impaired: {done}"


def feed_numbers(conn: Any, count: int, seconds: float) -> list[int]:
    """Read `count` numbered feed messages (anything else fails the test)."""
    numbers: list[int] = []
    deadline = time.monotonic() + seconds
    while len(numbers) < count and time.monotonic() < deadline:
        message = conn.read(100)
        if message is None:
            continue
        assert message != "", f"link lost under a merely bad wire: {conn.stats()}"
        assert isinstance(message, str) and message.isdigit(), message
        numbers.append(int(message))
    return numbers


def test_ws_feed_survives_delay_loss_reordering_and_a_rate_cap(
    pair: NetnsPair, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    before = Footprint.now()
    pair.shape(BAD_WIRE)
    packets = pair.counters()
    url = f"ws://{pair.server_ip}:{FEED_PORT}/feed|{options()}&payload=sub"
    conn = Dial(url, 15)
    assert conn is not None, dial.last_error()
    try:
        numbers = feed_numbers(conn, 100, 20)  # 2 s of feed at 50 messages/s
        assert len(numbers) == 100, f"only {len(numbers)} messages in 20 s: {conn.stats()}"
        assert numbers == list(range(numbers[0], numbers[0] + 100)), "lost, repeated or reordered"
        assert numbers[0] == 0, "the first messages of the feed were lost"
        stats = conn.stats()
        assert stats.reconnects == 0 and stats.heartbeats_missed == 0, stats
        assert stats.last_rtt is not None, stats  # heartbeats were answered throughout
        assert_wire_was_bad(pair, packets)
    finally:
        conn.close()
    settle(before)
    assert_no_traceback(caplog, capfd)


def echo_all(conn: Any, sent: list[str], seconds: float, pace: float = 0.0) -> list[Any]:
    """Write every message (`pace` s apart: one TCP segment each), then read them back (a
    NATS connection gets its own publications)."""
    for text in sent:
        assert conn.write(text), conn.stats()
        time.sleep(pace)
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    while len(got) < len(sent) and time.monotonic() < deadline:
        message = conn.read(100)
        if message not in (None, ""):
            got.append(message)
    return got


def test_nats_stream_loses_nothing_on_a_capped_then_bad_wire(
    pair: NetnsPair, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    before = Footprint.now()
    topic = unique("dialkit.netns.")
    url = f"nats://{pair.server_ip}:{NATS_PORT}?topic={topic}|{options()}&pingText=hb&pongText=hb"
    conn = Dial(url, 15)
    assert conn is not None, dial.last_error()
    try:
        pair.shape(Shape(rate_kbit=1000))  # 200 KB each way through 1 Mbit/s: >= 1.6 s
        started = time.monotonic()
        sent = [f"{i}:" + "x" * 2000 for i in range(100)]
        got = echo_all(conn, sent, 15)
        took = time.monotonic() - started
        assert got == sent, f"{len(got)} of {len(sent)} back; in order: {got == sent[: len(got)]}"
        assert took >= 1.5, f"200 KB in {took:.2f} s: the rate cap was not in effect"
        pair.shape(BAD_WIRE)
        packets = pair.counters()
        sent = [f"n{i}" for i in range(150)]
        got = echo_all(conn, sent, 20, pace=0.01)  # ~600 packets: some are lost
        assert got == sent, f"{len(got)} of {len(sent)} back; in order: {got == sent[: len(got)]}"
        stats = conn.stats()
        assert stats.reconnects == 0 and stats.heartbeats_missed == 0, stats
        assert_wire_was_bad(pair, packets)
    finally:
        conn.close()
    settle(before)
    assert_no_traceback(caplog, capfd)


@pytest.mark.parametrize("transport", ["ws", "nats"])
def test_recovers_after_a_total_outage_longer_than_the_deadline(
    pair: NetnsPair,
    transport: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    before = Footprint.now()
    if transport == "ws":
        url = f"ws://{pair.server_ip}:{FEED_PORT}/feed|{options(OUTAGE_PONG)}&payload=sub"
    else:
        topic = unique("dialkit.netns.")
        url = f"nats://{pair.server_ip}:{NATS_PORT}?topic={topic}|{options(OUTAGE_PONG)}"
        url += "&pingText=hb&pongText=hb"
    conn = Dial(url, 10)
    assert conn is not None, dial.last_error()
    try:
        assert alive(conn, transport, 5) is not None, conn.stats()
        pair.shape(BLACKOUT)
        started = time.monotonic()
        while conn.connected and time.monotonic() - started < DEADLINE + SLACK:
            time.sleep(0.01)
        detected = time.monotonic() - started
        assert not conn.connected, f"100% loss unnoticed after {detected:.2f} s: {conn.stats()}"
        while conn.read(-1) not in (None, ""):  # what came before the outage is not recovery
            pass
        time.sleep(INTERVAL + 1.5)  # reconnect attempts now go into the outage
        pair.shape(CLEAR)
        healed = time.monotonic()
        bound = INTERVAL + DEADLINE + HANDSHAKE + SLACK
        back = alive(conn, transport, bound)
        recovered = None if back is None else time.monotonic() - healed
        TIMINGS[f"{transport} outage detected"] = detected
        TIMINGS[f"{transport} outage recovered"] = -1.0 if recovered is None else recovered
        stats = conn.stats()
        assert stats.heartbeats_missed >= 1 and stats.last_error, stats
        assert recovered is not None and recovered <= bound, (
            f"{transport}: back {recovered} s after the wire healed (bound {bound:.1f} s): {stats}"
        )
        assert conn.stats().reconnects >= 1
    finally:
        conn.close()
    settle(before)
    assert_no_traceback(caplog, capfd)


def alive(conn: Any, transport: str, seconds: float) -> float | None:
    """Seconds until data flows on `conn`: a feed number (ws) or an echo of our own (nats)."""
    started = time.monotonic()
    token = unique("probe-")
    written = False
    while time.monotonic() - started < seconds:
        if transport == "nats" and conn.connected and not written:
            written = bool(conn.write(token))
        message = conn.read(50)
        if message == "":
            written = False
            time.sleep(0.01)
        elif message is not None and (transport == "ws" or message == token):
            return time.monotonic() - started
    return None


def settle(before: Footprint, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Footprint.now().fds <= before.fds and not before.new_threads():
            return
        time.sleep(0.05)
    assert before.new_threads() == [], "threads left running after close()"
    leaked = Footprint.now().fds - before.fds
    assert leaked <= 0, f"{leaked} file descriptors leaked"


def test_namespaces_are_removed_on_close() -> None:
    """The helper leaves nothing behind in the root namespace (routes, veths, namespaces)."""
    need_netns()
    with NetnsPair() as instance:
        name = instance.wire_ns
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert name not in listing and f"dk{instance.index}c" not in links
