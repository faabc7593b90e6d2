"""examples/huobi_ticker.py run as a user runs it, against the simulated HTX feed: heartbeats
for seconds, a forced drop, channel flags, and every message HTX documents fed to its parser."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from types import ModuleType

import pytest

from dial.simulator import Simulator
from tests.servers.simulator import EXAMPLES, Script, example, own_simulator, run, simulator

__all__ = ["own_simulator", "simulator"]

TIME = r"\d\d:\d\d:\d\d"
NUMBER = r"[-+0-9.e]+"
TICKER_ROW = re.compile(rf"^{TIME} +(\w+) +({NUMBER}) ticker +bid ({NUMBER}) ask ({NUMBER}) ")
TRADE_ROW = re.compile(rf"^{TIME} +(\w+) +({NUMBER}) trade\.detail +(buy|sell) ({NUMBER}) #\d+$")
DEPTH_ROW = re.compile(
    rf"^{TIME} +(\w+) +({NUMBER}) depth\.step0 +bid ({NUMBER}) x {NUMBER} \| "
    rf"ask ({NUMBER}) x {NUMBER} \| (\d+)/(\d+) levels$"
)
SYMBOLS = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("huobi_ticker", EXAMPLES / "huobi_ticker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_rows(lines: list[str]) -> dict[str, int]:
    """Every row is a well-formed ticker, trade or depth row with sane numbers; counts them."""
    counts = {"ticker": 0, "trade": 0, "depth": 0}
    for line in lines:
        if match := TICKER_ROW.match(line):
            symbol, last, bid, ask = match.groups()
            assert float(bid) < float(ask) and float(last) > 0, line
            counts["ticker"] += 1
        elif match := TRADE_ROW.match(line):
            symbol, price, _, amount = match.groups()
            assert float(price) > 0 and float(amount) > 0, line
            counts["trade"] += 1
        elif match := DEPTH_ROW.match(line):
            symbol, mid, bid, ask, bids, asks = match.groups()
            assert float(bid) < float(mid) < float(ask), line
            assert int(bids) > 1 and int(asks) > 1, line
            counts["depth"] += 1
        else:
            raise AssertionError(f"unexpected row: {line!r}")
        assert symbol in SYMBOLS, line
    return counts


def test_huobi_example_stays_connected_answering_pings() -> None:
    """Heartbeats every 0.2 s for 3 s (HTX: every 5 s), all answered: no drop, one link."""
    with Simulator("huobi", rate=5.0, huobi_ping_interval=0.2) as sim:
        result = run(example("huobi_ticker.py", "--url", sim.url("huobi"), "--seconds", "3"))
        assert result.returncode == 0, result.stderr
        assert sim.counters["huobi.heartbeat_drops"] == 0
        assert sim.counters["huobi.connections"] == 1
        assert sim.counters["huobi.pongs"] >= 10
        assert sim.counters["huobi.subs"] == 9  # 3 symbols x ticker, trade.detail, depth.step0
    assert "0 reconnects" in result.stderr
    assert re.search(r"(\d+) pings answered", result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "symbol", "last", "channel", "details"]
    counts = check_rows(lines[1:])
    assert counts["ticker"] > 10 and counts["trade"] > 10 and counts["depth"] >= 3
    no_traceback(result.stderr)


def test_huobi_example_resubscribes_after_a_drop(own_simulator: Simulator) -> None:
    """An abrupt drop: the link comes back, every topic is subscribed again, and trades and
    books are printed after it; Ctrl-C then ends it with the counts."""
    script = Script(example("huobi_ticker.py", "--url", own_simulator.url("huobi")))
    try:
        assert script.wait_for("depth.step0", count=3), script.err
        mark = len(script.out)
        own_simulator.drop_all(abrupt=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = script.out[mark:]
            if "trade.detail" in after and after.count("depth.step0") >= 3:
                break
            time.sleep(0.1)
        assert script.interrupt() == 130
    finally:
        script.kill()
    after = script.out[mark:].splitlines()[1:]  # the first may be a part of a row
    counts = check_rows(after)
    assert counts["trade"] > 0 and counts["depth"] >= 3 and counts["ticker"] > 0
    assert "1 reconnects" in script.err and "stopped" in script.err
    assert own_simulator.counters["huobi.connections"] == 2
    assert own_simulator.counters["huobi.subs"] == 18
    no_traceback(script.err)


def test_huobi_example_channels_and_symbols_by_flag(simulator: Simulator) -> None:
    argv = ["--url", simulator.url("huobi"), "--count", "12"]
    argv += ["--symbols", "ethusdt", "--channels", "trade,bbo,kline.5min,depth.step2"]
    result = run(example("huobi_ticker.py", *argv))
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 12
    channels = {row.split()[3] for row in rows}
    assert channels <= {"trade.detail", "bbo", "kline.5min", "depth.step2"}
    assert {"trade.detail", "bbo", "kline.5min"} <= channels
    assert all(row.split()[1] == "ETHUSDT" for row in rows)
    no_traceback(result.stderr)


def test_huobi_example_rejects_an_unknown_channel() -> None:
    result = run(example("huobi_ticker.py", "--channels", "ticker,candles", "--count", "1"))
    assert result.returncode == 2
    assert "unknown channel candles" in result.stderr
    no_traceback(result.stderr)


def test_huobi_example_reports_an_htx_error(simulator: Simulator) -> None:
    argv = ["--url", simulator.url("huobi"), "--symbols", "btcusdt,nosuchcoin", "--count", "3"]
    result = run(example("huobi_ticker.py", *argv))
    assert result.returncode == 0, result.stderr
    assert "HTX error bad-request: invalid topic market.nosuchcoin.ticker" in result.stderr
    no_traceback(result.stderr)


# -- every documented message through the example's parser ---------------------------------------

#: the examples of HTX's "Websocket Market Data" documentation (huobiapi/docs v1_en), verbatim
#: but for the comments, plus the shapes HTX's servers send where the examples differ
DOCUMENTED = [
    {"ping": 1492420473027},
    {"id": "id1", "status": "ok", "subbed": "market.btcusdt.kline.1min", "ts": 1489474081631},
    {"id": "id4", "status": "ok", "unsubbed": "market.btcusdt.trade.detail", "ts": 1494326028889},
    {"status": "error", "ts": 1, "id": "x", "err-code": "bad-request", "err-msg": "invalid topic"},
    {
        "ch": "market.ethbtc.kline.1min",
        "ts": 1489474082831,
        "tick": {
            "id": 1489464480, "amount": 0.0, "count": 0, "open": 7962.62, "close": 7962.62,
            "low": 7962.62, "high": 7962.62, "vol": 0.0,
        },
    },
    {
        "ch": "market.htusdt.depth.step0",
        "ts": 1572362902027,
        "tick": {
            "bids": [[3.7721, 344.86], [3.7709, 46.66]],
            "asks": [[3.7745, 15.44], [3.7746, 70.52]],
            "version": 100434317651,
            "ts": 1572362902012,
        },
    },
    {
        "ch": "market.btcusdt.mbp.5",
        "ts": 1573199608679,
        "tick": {
            "seqNum": 100020146795, "prevSeqNum": 100020146794,
            "asks": [[645.140000000000000000, 26.755973959140651643]],
        },
    },
    {
        "ch": "market.zecusdt.mbp.150",
        "ts": 1585074391470,
        "tick": {"seqNum": 100772868478, "prevSeqNum": 100772868476, "bids": [], "asks": []},
    },
    {
        "id": "id2",
        "rep": "market.btcusdt.mbp.5",
        "status": "ok",
        "data": {"seqNum": 100020142010, "bids": [[618.37, 71.594]], "asks": [[650.59, 14.9]]},
    },
    {
        "ch": "market.btcusdt.mbp.refresh.20",
        "ts": 1573199608679,
        "tick": {"seqNum": 100020142010, "bids": [[618.37, 71.594]], "asks": [[650.59, 14.9]]},
    },
    {  # the example quotes every value
        "ch": "market.btcusdt.bbo",
        "ts": 1489474082831,
        "tick": {
            "symbol": "btcusdt", "quoteTime": "1489474082811", "bid": "10008.31",
            "bidSize": "0.01", "ask": "10009.54", "askSize": "0.3", "seqId": "1276823698734",
        },
    },
    {  # what the servers send
        "ch": "market.btcusdt.bbo",
        "ts": 1671942417399,
        "tick": {
            "seqId": 161499606270, "ask": 16830.85, "askSize": 0.5189305239854196,
            "bid": 16830.84, "bidSize": 0.728783, "quoteTime": 1671942417398, "symbol": "btcusdt",
        },
    },
    {
        "ch": "market.btcusdt.trade.detail",
        "ts": 1489474082831,
        "tick": {
            "id": 14650745135,
            "ts": 1533265950234,
            "data": [
                {
                    "amount": 0.0099, "ts": 1533265950234, "id": 146507451359183894799,
                    "tradeId": 102043495674, "price": 401.74, "direction": "buy",
                }
            ],
        },
    },
    {
        "ch": "market.btcusdt.detail",
        "ts": 1494496390001,
        "tick": {
            "amount": 12224.2922, "open": 9790.52, "close": 10195.00, "high": 10300.00,
            "id": 1494496390, "count": 15195, "low": 9657.00, "vol": 121906001.754751,
        },
    },
    {
        "ch": "market.ethbtc.ticker",
        "ts": 1628587397308,
        "tick": {
            "open": 44718.5, "high": 46711, "low": 44480.81, "close": 45868.99,
            "amount": 22527.427922989766, "vol": 1030630905.0136755, "count": 676424,
            "bid": 45868.98, "bidSize": 0.016782, "ask": 45868.99, "askSize": 3.1279664455029423,
            "lastPrice": 45868.99, "lastSize": 0.007444,
        },
    },
    {"ch": "market.btc3lusdt.etp", "ts": 1, "tick": {"symbol": "btc3lusdt", "nav": 17.46}},
]  # fmt: skip
ROWS = {  # channel -> (symbol, last) of the one row a documented push gives
    "kline.1min": ("ETHBTC", 7962.62),
    "depth.step0": ("HTUSDT", (3.7721 + 3.7745) / 2),
    "mbp.refresh.20": ("BTCUSDT", (618.37 + 650.59) / 2),
    "bbo": ("BTCUSDT", None),
    "trade.detail": ("BTCUSDT", 401.74),
    "detail": ("BTCUSDT", 10195.0),
    "ticker": ("ETHBTC", 45868.99),
}


def test_huobi_example_reads_every_documented_message() -> None:
    """The old example read any channel ending in `.detail` as a ticker and died with
    KeyError 'close' on the first trade push; now every documented message is handled."""
    module = load_example()
    seen: dict[str, list[dict]] = {}
    for message in DOCUMENTED:
        for item in module.rows(message):
            seen.setdefault(item["channel"], []).append(item)
            assert module.row(item).split()[1] == item["symbol"]
        module.handle(json.dumps(message))
    assert set(seen) == set(ROWS)
    for channel, (symbol, last) in ROWS.items():
        assert all(item["symbol"] == symbol for item in seen[channel])
        if last is not None:
            assert [item["last"] for item in seen[channel]] == [pytest.approx(last)]
    assert len(seen["bbo"]) == 2  # quoted numbers or not
    assert [t["last"] for t in module.handle(json.dumps(DOCUMENTED[-2]))] == [45868.99]


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        b"\x1f\x8b binary that was not inflated",
        "[1, 2]",
        '{"ch": "market.btcusdt.trade.detail", "ts": 1, "tick": {"data": [{"price": 1}]}}',
        '{"ch": "market.btcusdt.depth.step0", "ts": 1, "tick": {"bids": [], "asks": []}}',
        '{"ch": "market.btcusdt.ticker", "ts": 1, "tick": {"close": "x"}}',
        '{"ch": "market.btcusdt.kline.1min", "ts": 1, "tick": null}',
        '{"ch": 5, "tick": {}}',
        '{"rep": "market.btcusdt.kline.1min", "status": "ok", "id": "1", "data": []}',
    ],
)
def test_huobi_example_skips_malformed_messages(message: str | bytes) -> None:
    module = load_example()
    parsed = module.parse(message)
    assert (module.rows(parsed) if parsed else []) == []
    assert module.handle(message) == []


def test_huobi_example_answers_pings_through_handle() -> None:
    module = load_example()
    sent: list[str] = []

    class Link:
        def write(self, data: str) -> int:
            sent.append(data)
            return len(data)

    assert module.handle('{"ping": 1492420473027}', Link()) == []
    assert sent == ['{"pong": 1492420473027}']


def test_huobi_example_names_the_real_url_and_the_doc_date() -> None:
    text = (EXAMPLES / "huobi_ticker.py").read_text()
    assert "wss://api.huobi.pro/ws" in text
    assert re.search(r"checked against HTX's documentation of \w+ \d{4}", text, re.IGNORECASE)
