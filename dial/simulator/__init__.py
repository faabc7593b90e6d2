"""An offline exchange simulator: Binance, OKX and Huobi (HTX) WebSocket APIs replicated from
the venues' official documentation (framing, channels, acks, errors, heartbeats, lifecycle
events), each venue on its own local port, so code written for the real exchange runs unchanged
against `ws://127.0.0.1:PORT`.

    from dial.simulator import Simulator
    with Simulator(rate=5) as sim:
        print(sim.url("huobi"))     # ws://127.0.0.1:PORT/ws
        sim.drop_all()              # disconnect every client, e.g. to test reconnects
"""

from __future__ import annotations

from .feed import DEMO_CREDENTIALS, Settings
from .okx import login_signature
from .server import EXCHANGES, PATHS, REAL_HOSTS, Simulator

__all__ = [
    "DEMO_CREDENTIALS",
    "EXCHANGES",
    "PATHS",
    "REAL_HOSTS",
    "Settings",
    "Simulator",
    "login_signature",
]
