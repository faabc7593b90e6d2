"""FMZ's four-broker demo: on each of nats, mqtt, amqp and kafka, one connection publishes a
line and reads it back (a connection receives its own publications).

    python examples/brokers.py --count 3                     # local brokers on default ports
    python examples/brokers.py --only mqtt,nats --url mqtt=mqtt://127.0.0.1:1884?topic=t
    make services                                            # starts all four first
"""

from __future__ import annotations

import argparse
import sys
import time

from dial import Dial, last_error

DEFAULT_ADDRESSES = {
    "nats": "nats://127.0.0.1:4222?topic=dialkit_demo",
    "mqtt": "mqtt://127.0.0.1:1883?topic=dialkit_demo",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/?queue=dialkit_demo",
    "kafka": "kafka://127.0.0.1:9092/dialkit_demo",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="rounds to run (default: until Ctrl-C)")
    parser.add_argument("--only", help="comma list of brokers (default: all four)")
    parser.add_argument(
        "--url", action="append", default=[], metavar="NAME=ADDRESS", help="override an address"
    )
    args = parser.parse_args(argv)
    addresses = dict(DEFAULT_ADDRESSES)
    for override in args.url:
        name, _, value = override.partition("=")
        if name not in addresses or not value:
            parser.error(f"--url expects NAME=ADDRESS with NAME in {', '.join(addresses)}")
        addresses[name] = value
    names = args.only.split(",") if args.only else list(addresses)
    unknown = [name for name in names if name not in addresses]
    if unknown:
        parser.error(f"unknown broker {', '.join(unknown)}")

    connections = {}
    for name in names:
        conn = Dial(addresses[name], 10)
        if conn:
            connections[name] = conn
        else:
            print(f"{name}: cannot connect: {last_error()}", file=sys.stderr)
    if not connections:
        return 1
    echoed = dict.fromkeys(connections, 0)
    rounds = 0
    try:
        while args.count is None or rounds < args.count:
            for name, conn in connections.items():
                conn.write(f"{name}, time: {time.strftime('%H:%M:%S')}, test msg.")
                message = conn.read(1000)  # ms; None when nothing came back in time
                echoed[name] += bool(message)
                print(f"{name:<5} read: {message!r}", flush=True)
            rounds += 1
            if args.count is None or rounds < args.count:
                time.sleep(1)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        for name, conn in connections.items():
            conn.close()
            print(f"close {name} connect", file=sys.stderr)
    silent = [name for name, count in echoed.items() if not count]
    if silent or len(connections) < len(names):
        if silent:
            print(f"never read back: {', '.join(silent)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
