"""Create the walkthrough's Kafka topic with several partitions (a no-op when it exists).

    python examples/scale_out/topic.py kafka://127.0.0.1:9092/trades --partitions 6

A topic the broker auto-creates gets its default partition count (often 1), and one partition
means one busy member of the consumer group: create it first, with room to grow. The
collectors' keys (the symbol) then spread the symbols over the partitions, each symbol always
to the same one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from dial.address import parse


async def create(bootstrap: str, topic: str, partitions: int) -> bool:
    """True when the topic was created, False when it was already there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        return False
    finally:
        await admin.close()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="kafka://host:port/topic")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    address = parse(args.address)
    if address.scheme != "kafka":
        parser.error(f"{args.address}: expected a kafka:// address")
    bootstrap, _, topic = address.target.partition("?")[0].partition("/")
    if not topic or args.partitions < 1:
        parser.error("expected kafka://host:port/topic and --partitions >= 1")
    made = asyncio.run(create(bootstrap, topic, args.partitions))
    print(f"{topic}: created with {args.partitions} partitions" if made else f"{topic}: exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
