"""The exchange simulator as pytest fixtures, and helpers to run scripts against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from dial.simulator import Simulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    """A shared simulator (all exchanges, 10 pushes/s); tests must not stop or drop it."""
    with Simulator(rate=10.0, huobi_ping_interval=1.0) as sim:
        yield sim


@pytest.fixture
def own_simulator() -> Iterator[Simulator]:
    """A private simulator a test may drop, stop and restart."""
    sim = Simulator(rate=10.0, huobi_ping_interval=1.0)
    sim.start()
    yield sim
    sim.stop()


def script_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra}
    return env


class Script:
    """A script running in a child process, its output collected as it comes."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env or script_env(),
            cwd=ROOT,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(
                target=self._pump, args=(self.process.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self.process.stderr, self.stderr), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)

    @property
    def out(self) -> str:
        return "".join(self.stdout)

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    def wait_for(self, text: str, seconds: float = 20.0, count: int = 1) -> bool:
        """Wait until `text` appeared `count` times on stdout (or the process ended)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.out.count(text) >= count:
                return True
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the pumps drain
                return self.out.count(text) >= count
            time.sleep(0.05)
        return False

    def wait(self, seconds: float = 30.0) -> int:
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"script still running after {seconds} s:\n{self.out[-2000:]}\n{self.err[-2000:]}"
            ) from None
        for thread in self._threads:
            thread.join(5)
        return code

    def interrupt(self, seconds: float = 15.0) -> int:
        """Ctrl-C, then the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.wait(seconds)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def run(
    argv: Sequence[str], seconds: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=seconds,
        env=env or script_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *args]
