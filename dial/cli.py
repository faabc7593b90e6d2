"""The `dial` command: read, write and query any address from a shell; run the simulator.

    dial read ADDRESS [-n N] [--timeout MS] [--json]
    dial write ADDRESS MESSAGE...          (no MESSAGE: one message per stdin line)
    dial exec ADDRESS SQL [--json]
    dial simulate [binance|okx|huobi|all] [--port P] [--rate R]

Errors are one line on stderr and a non-zero exit status: 1 for a failure, 2 for bad usage,
130 for Ctrl-C. Messages go to stdout; the live status line (when stderr is a terminal) and
notes go to stderr, so `dial read ... > file` captures only the data.
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
from collections.abc import Sequence
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


def _json_line(message: str | bytes) -> str:
    """Every message as one JSON value: JSON text compacted, other text as a string,
    binary as {"base64": ...}."""
    if isinstance(message, bytes):
        import base64

        return json.dumps({"base64": base64.b64encode(message).decode()})
    try:
        return json.dumps(json.loads(message), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(message, ensure_ascii=False)


def _emit(message: str | bytes, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(_json_line(message) + "\n")
    elif isinstance(message, bytes):
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
    connection = _stream(args.address, args.connect_timeout)
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
            message = connection.read(wait)
            if message is None:
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
            _emit(message, args.json)
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

    def connect_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--connect-timeout",
            type=_positive_float,
            default=10.0,
            metavar="S",
            help="seconds allowed for connecting (default 10, at most 600)",
        )
        command.add_argument("-q", "--quiet", action="store_true", help="no status on stderr")

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
    read.add_argument("--json", action="store_true", help="one JSON value per line")
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
    logger = logging.getLogger("dial")
    saved_level = logger.level
    if args.command != "plugin":  # `dial plugin` sets up logging itself (--log-level)
        logging.basicConfig(format="dial: %(message)s", stream=sys.stderr)
        logger.setLevel(logging.INFO if args.verbose else logging.CRITICAL)  # we report errors
    try:
        handler = getattr(args, "handler", None) or args.func  # dial.plugin.cli sets `func`
        return int(handler(args) or 0)
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
        logger.setLevel(saved_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
