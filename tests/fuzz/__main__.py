"""`python -m tests.fuzz [TARGET ...]` (what `make fuzz` runs): the long fuzz campaign.

Targets: address, codecs, websocket, plugin (default: all). Two engines:
- hypothesis (always): every property of every target, generated structured inputs;
- atheris (when installed, `pip install atheris`): coverage-guided byte fuzzing of the pure
  parsers (address, codecs, plugin request parser), one subprocess per target.

Budget, per target and engine (the first limit reached ends it):
  FUZZ_SECONDS=120     wall-clock seconds (shared by the target's properties)
  FUZZ_EXAMPLES=200000 examples per hypothesis property (atheris: runs per target)
  FUZZ_ENGINES=hypothesis,atheris
Exit status 1 when anything failed; each distinct failure is printed once with its minimal
input (hypothesis shrinks it) and a line to paste as a regression test.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import time
import warnings

from tests.fuzz.budget import ROOT, env_number, known_hits, run_target

TARGETS = {  # name -> (module, examples per hypothesis round)
    "address": ("tests.fuzz.fuzz_address", 2000),
    "codecs": ("tests.fuzz.fuzz_codecs", 500),
    "websocket": ("tests.fuzz.fuzz_websocket", 100),
    "plugin": ("tests.fuzz.fuzz_plugin", 500),
}
ATHERIS_TARGETS = ("address", "codecs", "plugin")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    args = parser.parse_args()
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    engines = os.environ.get("FUZZ_ENGINES", "hypothesis,atheris").split(",")
    warnings.simplefilter("ignore")  # hypothesis warns about the size of some reprs
    for logger in ("dial", "aiohttp.server", "aiohttp.access"):  # a warning per hostile case
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    seconds = env_number("FUZZ_SECONDS", 120)
    examples = int(env_number("FUZZ_EXAMPLES", 200_000))
    print(f"fuzz: targets={','.join(targets)} engines={','.join(engines)} "
          f"FUZZ_SECONDS={seconds:g} FUZZ_EXAMPLES={examples}", flush=True)  # fmt: skip
    summary: list[str] = []
    failures = 0
    started = time.monotonic()
    if "hypothesis" in engines:
        for name in targets:
            module_name, batch = TARGETS[name]
            print(f"[hypothesis] {name}", flush=True)
            module = importlib.import_module(module_name)
            report = run_target(name, module.PROPERTIES, batch)
            failures += len(report.failures)
            cases = ", ".join(f"{prop}={count}" for prop, count in report.cases.items())
            summary.append(
                f"hypothesis {name}: {sum(report.cases.values())} cases in {report.seconds:.0f}s "
                f"({cases}); {len(report.failures)} new failure(s)"
            )
            summary += [f"    FAILED {signature}" for signature, _ in report.failures]
    if "atheris" in engines:
        try:
            import atheris  # noqa: F401
        except ImportError:
            summary.append("atheris: not installed (pip install atheris), skipped")
        else:
            for name in (t for t in targets if t in ATHERIS_TARGETS):
                print(f"[atheris] {name}", flush=True)
                runs, found = _atheris(name, seconds, examples)
                failures += found
                summary.append(f"atheris {name}: {runs} runs; {found} new failure(s)")
    for signature, hits in known_hits().items():
        summary.append(f"    (met again {hits} times after it was reported: {signature})")
    print(f"\nfuzz summary ({time.monotonic() - started:.0f}s):", flush=True)
    print("\n".join(summary), flush=True)
    return 1 if failures else 0


def _atheris(name: str, seconds: float, examples: int) -> tuple[int, int]:
    """Run one atheris target in a subprocess; returns (runs, distinct failures)."""
    artifacts = os.environ.get("FUZZ_ARTIFACTS", "/tmp/dialkit-fuzz")
    os.makedirs(artifacts, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.atheris_main",
        name,
        f"-max_total_time={int(seconds)}",
        f"-runs={examples * 10}",  # byte-level runs are cheap: ten per structured example
        "-rss_limit_mb=4096",
        "-timeout=30",
        f"-artifact_prefix={artifacts}/{name}-",
        "-print_final_stats=1",
    ]
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, errors="replace")
    runs, found = 0, 0
    for line in (process.stdout + process.stderr).splitlines():
        if line.startswith("stat::number_of_executed_units:"):
            runs = int(line.split(":")[-1])
        if line.startswith("NEW FAILURE"):
            found += 1
            print(f"    {line}", flush=True)
    if process.returncode not in (0,) and not found:
        print((process.stdout + process.stderr)[-3000:], flush=True)
        found += 1
    return runs, found


if __name__ == "__main__":
    sys.exit(main())
