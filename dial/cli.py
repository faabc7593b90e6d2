"""The `dial` command: read, write and query any address from a shell; run the simulator.

    dial read ADDRESS [-n N] [--timeout MS] [--json] [--offset O] [--eof]
    dial write ADDRESS MESSAGE...          (no MESSAGE: one message per stdin line)
    dial pipe SRC DST [--key FIELD] [--table NAME] [-n N] [--status]
    dial exec ADDRESS SQL [--json]
    dial simulate [binance|okx|huobi|all] [--port P] [--rate R]

Errors are one line on stderr and a non-zero exit status: 1 for a failure, 2 for bad usage
(for `pipe` also a bad address), 130 for Ctrl-C. Messages go to stdout; the live status line
(when stderr is a terminal) and notes go to stderr, so `dial read ... > file` captures only
the data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__

if TYPE_CHECKING:
    from .connection import Connection
    from .databases.connection import DatabaseConnection

__all__ = ["main"]

DEFAULT_SIMULATOR_PORT = 8765
STATUS_EVERY = 0.5  # seconds between status-line refreshes
POLL_MS = 250  # read() slice while a status line is shown, so it keeps moving when idle


class Failure(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class Usage(Failure):
    """Bad usage (a bad address for `pipe`): printed as one line, exit status 2."""


# -- output helpers --------------------------------------------------------------------------


class StatusLine:
    """`connected | 1,204 msgs | 48.0 msg/s | drops 0 | reconnects 0` kept on one stderr line."""

    def __init__(self, connection: Any, stream: TextIO, enabled: bool, notes: bool = False) -> None:
        self.connection = connection
        self.notes = notes  # say "link down" / "reconnected" on stderr when not a terminal
        self.stream = stream
        self.enabled = enabled
        self.shown = False
        self._last_at = time.monotonic()
        self._last_in = 0
        self._rate = 0.0
        self._connected = True

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_at < STATUS_EVERY and not force:
            return
        stats = self.connection.stats()
        elapsed = now - self._last_at
        if elapsed > 0:
            self._rate = (stats.messages_in - self._last_in) / elapsed
        self._last_at, self._last_in = now, stats.messages_in
        self._note_transition(stats)
        if not self.enabled:
            return
        state = "connected" if stats.connected else "DISCONNECTED"
        self.stream.write(
            f"\r\x1b[K{state} | {stats.messages_in:,} msgs | {self._rate:,.1f} msg/s | "
            f"drops {stats.dropped:,} | reconnects {stats.reconnects:,}"
        )
        self.stream.flush()
        self.shown = True

    def _note_transition(self, stats: Any) -> None:
        """Without a terminal, say on stderr when the link goes down and comes back."""
        if stats.connected == self._connected:
            return
        self._connected = stats.connected
        if self.notes and not self.enabled:
            if stats.connected:
                note(f"reconnected (#{stats.reconnects})")
            else:
                note(f"link down: {stats.last_error or 'connection lost'}")

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def note(text: str) -> None:
    sys.stderr.write(f"dial: {text}\n")
    sys.stderr.flush()


def _emit(message: str | bytes) -> None:
    if isinstance(message, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(message + b"\n")
    else:
        sys.stdout.write(message + "\n")
    sys.stdout.flush()


# -- dialling --------------------------------------------------------------------------------


def _stream(address: str, timeout: float) -> Connection:
    from .dialer import stream
    from .errors import last_error

    _require_kind(address, "stream")
    connection = stream(address, timeout)
    if connection is None:
        raise Failure(last_error() or "could not connect")
    return connection


def _database(address: str, timeout: float) -> DatabaseConnection:
    from .dialer import database
    from .errors import last_error

    _require_kind(address, "database")
    connection = database(address, timeout)
    if connection is None:
        raise Failure(last_error() or "could not connect")
    return connection


def _require_kind(address: str, kind: str) -> None:
    """Refuse the wrong verb before dialling, naming the right one (the registry knows)."""
    from .registry import kind_of

    found = kind_of(address)
    if found is None or found == kind:
        return  # unknown or unparsable: Dial gives the precise reason
    if found == "database":
        raise Failure(f"{_scheme(address)}:// is a database: use `dial exec ADDRESS SQL`")
    raise Failure(
        f"{_scheme(address)}:// is not a database; exec needs "
        "sqlite3://, mysql://, postgres:// or clickhouse://"
    )


def _reconnects(address: str) -> bool:
    from .address import parse

    try:
        return parse(address).options.reconnect
    except Exception:
        return False


# -- read --json, --offset, --eof --------------------------------------------------------------


def _read_address(args: argparse.Namespace) -> str:
    """The address `read` dials: kcat's --offset written into the kafka query, and
    meta=true for --json (every message with its envelope)."""
    address: str = args.address
    if args.offset is not None:
        address = kafka_offset(address, args.offset)
    if args.eof and _scheme(address).lower() != "kafka":
        raise Failure("--eof (exit at the end of every partition) needs a kafka:// address")
    if args.json:
        from .errors import AddressError
        from .pipes import with_options

        try:
            address = with_options(address, meta="true")
        except AddressError:
            pass  # Dial gives the precise reason
    return address


OFFSET_WORDS = frozenset({"beginning", "end", "earliest", "latest"})


def kafka_offset(address: str, offset: str) -> str:
    """`kafka://h/T?group=G|opts` with `offset=` in its query set to `offset`
    (beginning|end|N|-N, as kcat's -o)."""
    if _scheme(address).lower() != "kafka":
        raise Failure("--offset applies to kafka:// addresses (kcat's -o)")
    if offset not in OFFSET_WORDS and not offset.lstrip("-").isdigit():
        raise Failure(f"--offset {offset!r}: expected beginning, end, N or -N")
    head, bar, options = address.partition("|")
    target, _, query = head.partition("?")
    pairs = [pair for pair in query.split("&") if pair and not pair.startswith("offset=")]
    return f"{target}?{'&'.join([*pairs, f'offset={offset}'])}{bar}{options}"


def _end_check(connection: Connection) -> Any:
    """`--eof`: a check that is true once every partition is read to its end and nothing
    is left in the buffer."""
    from .connection import session_of

    session = session_of(connection)
    at_end = getattr(session.transport, "at_end", None)
    if at_end is None:
        connection.close()
        raise Failure("--eof: this kafka:// transport cannot tell where a partition ends")
    buffer = session.buffer

    def drained() -> bool:
        return bool(at_end()) and len(buffer) == 0

    return drained


def _envelope_reader(connection: Connection) -> Any:
    """read(wait) for --json: each message as its envelope's JSON line (kcat -J); None on
    a timeout, "" for the disconnect marker, as read() gives them."""
    from .address import redact
    from .connection import session_of
    from .pipes import envelope_for

    session = session_of(connection)
    source, read = redact(session.address.url), session.buffer.read

    def take(wait: float | None) -> str | None:
        item = read(wait)
        if item is None or item == "":
            return item
        fields = envelope_for(item, source).as_dict()
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    return take


# -- verbs -----------------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text!r}")
    return int(text)


def _scheme(address: str) -> str:
    return address.split("://", 1)[0]


def cmd_read(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise Failure("-n must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise Failure("--timeout must be a positive number of milliseconds")
    address = _read_address(args)
    connection = _stream(address, args.connect_timeout)
    at_end = _end_check(connection) if args.eof else None
    take = _envelope_reader(connection) if args.json else connection.read
    reconnecting = _reconnects(args.address)
    status = StatusLine(
        connection, sys.stderr, _isatty(sys.stderr) and not args.quiet, notes=reconnecting
    )
    count, last_message_at = 0, time.monotonic()
    try:
        while args.n is None or count < args.n:
            wait: float | None = POLL_MS
            if args.timeout is not None:
                left = args.timeout - (time.monotonic() - last_message_at) * 1000
                if left <= 0:
                    raise Failure(f"no message within {args.timeout:g} ms")
                wait = min(POLL_MS, max(left, 1))
            message = take(wait)
            if message is None:
                if at_end is not None and at_end():
                    return 0
                status.refresh()
                continue
            if message == "" and not connection.connected:
                if reconnecting:
                    status.refresh()
                    time.sleep(0.05)
                    continue
                status.refresh(force=True)
                status.clear()
                reason = connection.stats().last_error or "connection closed"
                if args.n is not None:
                    raise Failure(f"disconnected after {count} of {args.n} messages: {reason}")
                note(f"disconnected: {reason}")
                return 0
            status.clear()
            _emit(message)
            count += 1
            last_message_at = time.monotonic()
            status.refresh()
    finally:
        status.clear()
        connection.close()
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    messages: Sequence[str] = args.message or [line.rstrip("\r\n") for line in sys.stdin]
    if not messages:
        raise Failure("nothing to write: give MESSAGE arguments or lines on stdin")
    connection = _stream(args.address, args.connect_timeout)
    try:
        for index, message in enumerate(messages):
            if connection.write(message) == 0:
                reason = connection.stats().last_error or "the link is down"
                raise Failure(f"write failed after {index} of {len(messages)} messages: {reason}")
    finally:
        connection.close()  # flushes what was queued
    stats = connection.stats()
    if stats.send_errors or stats.messages_out < len(messages):
        reason = stats.last_error or "the link broke while sending"
        raise Failure(f"sent {stats.messages_out} of {len(messages)} messages: {reason}")
    if _isatty(sys.stderr) and not args.quiet:
        note(f"sent {stats.messages_out} message(s), {stats.bytes_out:,} bytes")
    return 0


class PipeStatus:
    """`in 1,204 (48.0/s) | out 1,200 (47.5/s) | lag 4 | drops 0 | reconnects 0/0` on one
    stderr line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False
        self._last_at = time.monotonic()
        self._last: Any = None

    def show(self, progress: Any) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_at, 1e-9)
        last = self._last or progress
        rate_in = (progress.read - last.read) / elapsed if self._last else 0.0
        rate_out = (progress.written - last.written) / elapsed if self._last else 0.0
        self._last_at, self._last = now, progress
        self.stream.write(
            f"\r\x1b[Kin {progress.read:,} ({rate_in:,.1f}/s) | out {progress.written:,} "
            f"({rate_out:,.1f}/s) | lag {progress.lag:,} | drops {progress.dropped:,} | "
            f"replayed {progress.replayed:,} | reconnects "
            f"{progress.source_reconnects}/{progress.sink_reconnects}"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def cmd_pipe(args: argparse.Namespace) -> int:
    import threading

    from .errors import AddressError, ArgumentError
    from .pipes import Pipe, PipeError, json_field_key

    source = args.src
    if args.offset is not None:
        source = kafka_offset(source, args.offset)
    try:
        pipe = Pipe(
            source,
            args.dst,
            key=json_field_key(args.key) if args.key else None,
            table=args.table,
            batch=args.batch,
            linger=args.linger / 1000.0,
            count=args.n,
            timeout=args.connect_timeout,
            retry=args.retry,
        )
    except (AddressError, ArgumentError) as exc:
        raise Usage(str(exc)) from None
    interrupted: list[int] = []

    def on_signal(number: int, _frame: Any) -> None:
        interrupted.append(number)
        pipe.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    outcome: list[Any] = []
    worker = threading.Thread(target=_run_pipe, args=(pipe, outcome), name="dial-pipe")
    worker.start()
    status = PipeStatus(sys.stderr)
    show = (args.status or _isatty(sys.stderr)) and not args.quiet
    try:
        while worker.is_alive():
            worker.join(STATUS_EVERY)
            if show and worker.is_alive():
                status.show(pipe.progress())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        status.clear()
    result = outcome[0]
    if isinstance(result, PipeError):
        if result.result is not None and not args.quiet:
            note(f"pipe: {result.result.summary()}")
        raise Failure(str(result))
    if isinstance(result, (AddressError, ArgumentError)):
        raise Usage(str(result))
    if isinstance(result, BaseException):
        raise result
    if not args.quiet:
        note(f"pipe: {result.summary()}")
    if interrupted and interrupted[0] == signal.SIGINT:
        return 130
    return 0


def _run_pipe(pipe: Any, outcome: list[Any]) -> None:
    try:
        outcome.append(pipe.run())
    except BaseException as exc:  # handed to the main thread, which reports it
        outcome.append(exc)


def cmd_exec(args: argparse.Namespace) -> int:
    from .errors import last_error
    from .tables import format_table

    connection = _database(args.address, args.connect_timeout)
    try:
        result = connection.exec(args.sql)
        if result is None:
            raise Failure(last_error() or "statement failed")
    finally:
        connection.close()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    elif isinstance(result, dict) and result.get("columns"):
        rows = result.get("values") or []
        print(format_table(result["columns"], rows))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    elif isinstance(result, dict) and "rowcount" in result:
        count = result["rowcount"] or 0
        print(f"OK, {count} row{'s' if count != 1 else ''} affected")
    else:
        print(json.dumps(result, ensure_ascii=False, default=str))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulator import Simulator

    try:
        simulator = Simulator(
            args.exchange,
            host=args.host,
            port=args.port,
            rate=args.rate,
            huobi_ping_interval=args.ping_interval,
            binance_max_lifetime=args.binance_lifetime,
            okx_legacy_deflate=args.okx_legacy_deflate,
        )
    except ValueError as exc:
        raise Failure(str(exc)) from None

    async def run() -> None:
        try:
            await simulator.start_async()
        except OSError as exc:
            last = args.port + len(simulator.exchanges) - 1 if args.port else 0
            ports = f"{args.port}-{last}" if last > args.port else str(args.port)
            raise Failure(f"cannot listen on {args.host}:{ports}: {exc.strerror or exc}") from None
        print(f"simulating {', '.join(simulator.exchanges)} at {args.rate:g} market steps/s")
        for venue in simulator.exchanges:
            print(f"  {venue:<8} {simulator.base_url(venue)}")
        for feed, url in simulator.urls().items():
            print(f"  {feed:<15} {url}")
        print(f'FMZ scripts (dial.fmz): export DIAL_REDIRECT="{simulator.redirect_rules()}"')
        print("Ctrl-C stops it.", flush=True)
        stopped = asyncio.get_running_loop().create_future()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: None if stopped.done() else stopped.set_result(None)
            )
        try:
            await stopped
        finally:
            await simulator.stop_async()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    return 0


# -- parser ----------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be computed only when help is shown."""

    def __init__(self, *args: Any, epilog_factory: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self.epilog_factory is not None and self.epilog is None:
            self.epilog = self.epilog_factory()
        return super().format_help()


def _simulator_catalogue() -> str:
    from .simulator import Simulator

    lines = Simulator().describe()
    return "served (venue, path, channels):\n" + "\n".join(f"  {line}" for line in lines)


ADDRESS_HELP = """\
address: scheme://target[|option=value&option=value...]   ('||' when a value holds '|')
  streams:   ws://host[:port]/path  wss://...  tcp://host:port  tls://host:port
             udp://host:port  unix:///path.sock  mqtt://host:1883?topic=T
             nats://host:4222?topic=S  amqp://user:pwd@host:5672/?queue=Q
             kafka://host:9092/TOPIC
  databases: sqlite3://file.db  sqlite3://:memory:  mysql://user:pwd@tcp(host:3306)/db
             postgres://user=u dbname=d host=h port=5432  clickhouse://tcp://host:9000?...
stream options (after '|'):
  compress=gzip|gzip_raw|deflate|zlib  mode=recv|send|dual  reconnect=true
  interval=MS (milliseconds between reconnects, default 1000)  payload=TEXT (sent on connect)
  proxy=socks5://user:pwd@host:port  verify=false  ping=S  pong=S  idle=S (seconds)
quote the address in the shell: it holds '|' and '&'."""


PIPE_HELP = """\
Move every message from SRC to DST, at least once, until Ctrl-C (or -n N messages).

The source is read with its envelope (meta=true) and reconnects (reconnect=true) unless its
address says otherwise. Where it can acknowledge (kafka with group=, nats with stream=,
amqp) it is read with ack=manual, and a batch is acknowledged only once the sink has it: a
confirmed write (confirm=true, added where the sink's transport confirms), an insert that
returned, or for other streams the batch handed to the socket. A pipe killed and restarted
re-reads what it had not acknowledged; "replayed" counts what it recognised as such (broker
redelivery flags; for a database sink, offsets already in the table).

A database DST gets batched inserts into --table, created if absent:
  received_at timestamp (UTC), source text, topic text null, src_partition int null,
  src_offset bigint null, key text null, payload text (non-UTF-8 bytes: base64)
(ClickHouse: a MergeTree ordered by received_at.)

While the sink is behind nothing is read: a broker holds its backlog; a feed that cannot wait
(an exchange WebSocket) drops its oldest buffered messages, counted as drops.

The status line (stderr, on a terminal or with --status): messages in and out with rates,
lag (read or buffered, not yet written), drops, replayed, reconnects source/sink. A summary
line follows at the end.

exit status: 0 done (-n reached, or SIGTERM), 1 failure (an end could not be dialled, the
source was lost without reconnect=true, the sink kept failing for --retry seconds),
2 bad usage or a bad address, 130 Ctrl-C (after writing and acknowledging what was read)."""

PIPE_EXAMPLES = """\
  dial pipe 'ws://127.0.0.1:8765/ws/btcusdt@trade' kafka://127.0.0.1:9092/trades --key s
  dial pipe 'kafka://127.0.0.1:9092/trades?group=rec' \\
      'postgres://user=postgres dbname=test host=127.0.0.1' --table trades
  dial pipe 'nats://127.0.0.1:4222?topic=ticks' ws://127.0.0.1:9000/in"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dial",
        description="Dial an address (ws://, tcp://, mqtt://, sqlite3://, ...) from the shell.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{ADDRESS_HELP}\n\nexample:\n"
        "  dial read 'wss://ws.okx.com:8443/ws/v5/public|reconnect=true&payload="
        '{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}\' -n 3',
    )
    parser.add_argument("--version", action="version", version=f"dial {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def connect_options(command: argparse.ArgumentParser, seconds: float = 10.0) -> None:
        command.add_argument(
            "--connect-timeout",
            type=_positive_float,
            default=seconds,
            metavar="S",
            help=f"seconds allowed for connecting (default {seconds:g}, at most 600)",
        )
        command.add_argument("-q", "--quiet", action="store_true", help="no status on stderr")

    def offset_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "-o",
            "--offset",
            metavar="O",
            help="kafka: start at beginning, end, offset N or N from the end (-N); sets "
            "offset= in the address (with group=: only where the group has no commit)",
        )

    def verb(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"{ADDRESS_HELP}\n\nexample:\n  {example}",
        )

    read = verb(
        "read",
        "print messages as they arrive, one per line",
        "dial read 'ws://127.0.0.1:8765/ws/!ticker@arr|reconnect=true' -n 5 --timeout 3000",
    )
    read.add_argument("address", help="where to read from (see below)")
    read.add_argument("-n", type=int, metavar="N", help="stop after N messages")
    read.add_argument(
        "--timeout",
        type=float,
        metavar="MS",
        help="fail when no message arrives for MS milliseconds",
    )
    read.add_argument("-c", "--count", type=int, dest="n", metavar="N", help="the same as -n")
    read.add_argument(
        "--json",
        action="store_true",
        help="each message as one JSON object with its envelope (source, kind, topic, "
        "partition, offset, key, headers, ts, received_at, redelivered, payload), like "
        "kcat -J",
    )
    offset_option(read)
    read.add_argument(
        "-e",
        "--eof",
        action="store_true",
        help="kafka: exit 0 once every partition is read to its end (kcat -e)",
    )
    connect_options(read)
    read.set_defaults(handler=cmd_read)

    write = verb(
        "write",
        "send messages: each MESSAGE argument, or each stdin line",
        "dial write 'mqtt://127.0.0.1:1883?topic=bots' 'hello' 'world'",
    )
    write.add_argument("address", help="where to send to (see below)")
    write.add_argument(
        "message", nargs="*", metavar="MESSAGE", help="one message each (none: stdin lines)"
    )
    connect_options(write)
    write.set_defaults(handler=cmd_write)

    pipe = sub.add_parser(
        "pipe",
        help="move every message from SRC to DST (a stream or a database table)",
        description=PIPE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{ADDRESS_HELP}\n\nexamples:\n{PIPE_EXAMPLES}",
    )
    pipe.add_argument("src", metavar="SRC", help="where to read from")
    pipe.add_argument("dst", metavar="DST", help="where to write to: a stream or a database")
    pipe.add_argument(
        "--key",
        metavar="FIELD",
        help="the payload's JSON field (dotted path, e.g. s or data.s) as the Kafka key / "
        "AMQP routing key",
    )
    pipe.add_argument(
        "--table",
        default="dial_messages",
        metavar="NAME",
        help="database sink: the table (created if absent; default dial_messages)",
    )
    pipe.add_argument(
        "--batch",
        type=int,
        default=500,
        metavar="N",
        help="messages per sink write / confirmation round (default 500)",
    )
    pipe.add_argument(
        "--linger",
        type=_positive_float,
        default=100.0,
        metavar="MS",
        help="how long a partial batch waits for more (default 100 ms)",
    )
    pipe.add_argument("-n", "--count", type=int, dest="n", metavar="N", help="stop after N")
    pipe.add_argument(
        "--retry",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds a failing sink is retried before the pipe gives up (default 30)",
    )
    offset_option(pipe)
    pipe.add_argument(
        "--status", action="store_true", help="show the status line even without a terminal"
    )
    # a restarted consumer-group member may wait for the broker to evict the killed one
    connect_options(pipe, seconds=60.0)
    pipe.set_defaults(handler=cmd_pipe)

    execute = verb(
        "exec",
        "run one SQL statement on a database and print the result",
        "dial exec sqlite3://ticks.db 'SELECT symbol, count(*) FROM ticks GROUP BY symbol'",
    )
    execute.add_argument("address", help="a database address (see below)")
    execute.add_argument("sql", metavar="SQL", help="one statement")
    execute.add_argument("--json", action="store_true", help="print the raw result as JSON")
    connect_options(execute)
    execute.set_defaults(handler=cmd_exec)

    simulate = sub.add_parser(
        "simulate",
        help="run the offline exchange simulator",
        description="Binance, OKX and Huobi (HTX) replicated from their official API "
        "documentation, one local port per venue (--port is the first; the next venues "
        "take the following ports).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog_factory=_simulator_catalogue,
    )
    simulate.add_argument(
        "exchange",
        nargs="?",
        default="all",
        choices=["binance", "okx", "huobi", "all"],
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=_port, default=DEFAULT_SIMULATOR_PORT)
    simulate.add_argument(
        "--rate", type=_positive_float, default=2.0, help="market steps (pushes) per second"
    )
    simulate.add_argument(
        "--binance-lifetime",
        type=_positive_float,
        default=86_400.0,
        metavar="S",
        help="seconds before Binance cuts a connection (default 24 h, as Binance does)",
    )
    simulate.add_argument(
        "--okx-legacy-deflate",
        action="store_true",
        help="raw-DEFLATE every OKX frame, as FMZ-era scripts expect (real OKX v5 does not)",
    )
    simulate.add_argument(
        "--ping-interval",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds between Huobi heartbeats (default 5)",
    )
    simulate.set_defaults(handler=cmd_simulate)

    _register_plugin(sub)
    return parser


def _register_plugin(sub: Any) -> None:
    """`dial plugin ...` comes from dial.plugin.cli when that part is installed."""
    try:
        module = importlib.import_module("dial.plugin.cli")
    except ImportError as exc:
        if exc.name and (exc.name == "dial.plugin" or exc.name.startswith("dial.plugin.cli")):
            return
        reason = f"dial plugin is unavailable: {exc}"
        broken = sub.add_parser("plugin", help="custom-protocol plugin host (unavailable)")
        broken.add_argument("rest", nargs=argparse.REMAINDER)
        broken.set_defaults(handler=lambda _args: _fail(reason))
        return
    register = getattr(module, "register", None)
    if callable(register):
        register(sub)


def _fail(reason: str) -> int:
    raise Failure(reason)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    # `dial plugin` sets up logging itself (--log-level)
    restore_logging = None if args.command == "plugin" else _cli_logging(args.verbose)
    try:
        handler = getattr(args, "handler", None) or args.func  # dial.plugin.cli sets `func`
        return int(handler(args) or 0)
    except Usage as exc:
        note(f"error: {exc}")
        return 2
    except Failure as exc:
        note(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `dial read ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 0
    except Exception as exc:
        from .errors import describe_error

        note(f"error: {describe_error(exc)}")
        return 1
    finally:
        if restore_logging is not None:
            restore_logging()


def _cli_logging(verbose: bool) -> Callable[[], None]:
    """Without -v stderr carries only our own one-line reasons (`note`): dialkit's logger
    and every library's (aiokafka, nats, aiormq, ...) stay quiet, also Python's last-resort
    handler. With -v: dialkit at INFO and the libraries' warnings, each line naming its
    logger. Returns the function that puts the previous configuration back."""
    root, ours = logging.getLogger(), logging.getLogger("dial")
    saved_level = ours.level
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        ours.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()  # a handler on root: no last-resort printing
        ours.setLevel(logging.CRITICAL)  # failures are reported once, by us
    root.addHandler(handler)

    def restore() -> None:
        root.removeHandler(handler)
        ours.setLevel(saved_level)

    return restore


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
