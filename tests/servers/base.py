"""Shared plumbing for starting real daemons: port probes, apt installs, process lifetime."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[2]
# Data directories and logs of the daemons we start: outside the checkout, which may sit under a
# private parent (/root is mode 700) that the postgres/mysql/clickhouse users cannot traverse.
STATE = Path(tempfile.gettempdir()) / f"dialkit-services-{os.getuid()}"

_started: list[subprocess.Popen[bytes]] = []
_apt_updated = False


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: integration tests must not silently skip there."""
    if IN_CI:
        pytest.fail(f"required server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, seconds: float, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(port, host):
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_binary(binary: str, apt_package: str) -> str:
    """Path of `binary`, apt-installing `apt_package` first if it is missing."""
    global _apt_updated
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary) if p.exists()),
        None,
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        unavailable(f"{binary} is not installed and cannot be apt-installed here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
        _apt_updated = True
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", apt_package], env=env, capture_output=True, text=True
    )
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary) if p.exists()),
        None,
    )
    if not found:
        unavailable(f"apt-get install {apt_package} failed: {result.stderr.strip()[-300:]}")
    return found


def start(
    name: str,
    argv: Sequence[str],
    port: int | None,
    ready_seconds: float = 15.0,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground of a child process, wait for its port, stop it at exit."""
    STATE.mkdir(exist_ok=True)
    log_path = STATE / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    process.stop_signal = stop_signal  # type: ignore[attr-defined]
    _started.append(process)
    if port is not None and not wait_port(port, ready_seconds):
        stop(process)
        tail = log_path.read_text(errors="replace")[-500:]
        unavailable(f"{name} did not listen on port {port} within {ready_seconds} s: {tail}")
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, getattr(process, "stop_signal", signal.SIGTERM))
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    if process in _started:
        _started.remove(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """Hard-kill (SIGKILL), as a crash would."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    if process in _started:
        _started.remove(process)


def temp_dir(prefix: str) -> Path:
    STATE.mkdir(mode=0o755, exist_ok=True)
    STATE.chmod(0o755)  # traversable by the daemons' own users
    return Path(tempfile.mkdtemp(prefix=prefix, dir=STATE))


@atexit.register
def _stop_all() -> None:
    for process in list(_started):
        try:
            stop(process)
        except Exception:
            pass
