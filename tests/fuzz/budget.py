"""Run hypothesis properties as fuzz targets: a budget from the environment, counted cases, and
every distinct failure reported once (a failure already reported is not hunted again).

Budget (per target; the first limit reached ends it):
  FUZZ_SECONDS   wall-clock seconds per target (default 120), shared by its properties
  FUZZ_EXAMPLES  generated examples per property (default 200000)
"""

from __future__ import annotations

import functools
import os
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy

ROOT = Path(__file__).resolve().parents[2]

_calls: Counter[str] = Counter()  # property name -> executed cases (shrinking included)
_known: set[str] = set()  # failure signatures already reported in this run
_known_hits: Counter[str] = Counter()


def signature(exc: BaseException) -> str:
    """`ExcType at file:line` of the deepest frame in the project (not the stdlib); an
    assertion adds the text before the first `:` of its message."""
    where = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if ROOT in path.parents and ".venv" not in path.parts:
            where = f"{path.relative_to(ROOT)}:{frame.lineno}"
    if isinstance(exc, AssertionError):  # one check may fail in several ways: "kind: detail"
        kind = re.sub(r"\d+", "#", str(exc).split(":", 1)[0][:60])
        return f"{type(exc).__name__} at {where} ({kind})"
    return f"{type(exc).__name__} at {where}"


@dataclass(frozen=True)
class Property:
    """A property body and the strategies for its keyword arguments; `build(settings)` gives
    a fresh hypothesis test each time (a test object takes one `settings` only)."""

    name: str
    body: Callable[..., Any]
    strategies: dict[str, SearchStrategy[Any]]

    def build(self, config: settings) -> Callable[[], None]:
        name, body = self.name, self.body

        @functools.wraps(body)
        def run(**kwargs: Any) -> None:
            _calls[name] += 1
            try:
                body(**kwargs)
            except Exception as exc:
                sig = signature(exc)
                if sig in _known:  # already reported: let the budget hunt for new ones
                    _known_hits[sig] += 1
                    return
                raise

        return config(given(**self.strategies)(run))

    def smoke(self, examples: int) -> None:
        """The normal test run: few examples, deterministic, no example database."""
        self.build(
            settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )()


def prop(**strategies: SearchStrategy[Any]) -> Callable[[Callable[..., Any]], Property]:
    """`@prop(text=st.text())` turns `def address_parse(text)` into a `Property`."""

    def decorate(body: Callable[..., Any]) -> Property:
        return Property(body.__name__, body, strategies)

    return decorate


@dataclass
class Report:
    target: str
    cases: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (signature, full text)
    seconds: float = 0.0


def env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def run_target(target: str, properties: list[Property], batch: int) -> Report:
    """Run every property of one target in rounds of `batch` examples until the budget ends."""
    seconds = env_number("FUZZ_SECONDS", 120)
    examples = int(env_number("FUZZ_EXAMPLES", 200_000))
    report = Report(target)
    started = time.monotonic()
    share = seconds / max(1, len(properties))
    for item in properties:
        name = item.name
        generated, prop_started = 0, time.monotonic()
        print(f"  {target}.{name}: ", end="", flush=True)
        while generated < examples and time.monotonic() - prop_started < share:
            size = min(batch, examples - generated)
            runner = item.build(
                settings(
                    max_examples=size,
                    deadline=None,
                    database=None,
                    print_blob=True,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate, Phase.target, Phase.shrink],
                )
            )
            try:
                runner()
            except BaseException as exc:  # report it and keep fuzzing
                if isinstance(exc, KeyboardInterrupt):
                    raise
                for single in getattr(exc, "exceptions", None) or [exc]:
                    sig = signature(single)
                    if sig not in _known:
                        _known.add(sig)
                        text = "".join(traceback.format_exception(single))
                        report.failures.append((f"{name}: {sig}", text))
                        print(f"\n    FAILURE {sig}\n{_indent(text)}", flush=True)
            generated += size
            print(".", end="", flush=True)
        report.cases[name] = _calls[name]
        print(f" {_calls[name]} cases in {time.monotonic() - prop_started:.0f}s", flush=True)
    report.seconds = time.monotonic() - started
    return report


def known_hits() -> Counter[str]:
    return _known_hits


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())
