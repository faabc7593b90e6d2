"""A small, deterministic slice of every fuzz target, so the targets cannot rot.

The real campaign is `make fuzz` (tests/fuzz/, not collected by the normal run); here each
property runs a few hundred derandomized examples (the WebSocket one a few dozen), well under
20 s in all. A failure here is a real defect: see tests/test_fuzz_regressions.py for the ones
the fuzzers found, reduced to plain tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import fuzz_address, fuzz_codecs, fuzz_plugin, fuzz_websocket
from tests.fuzz.budget import Property

SMOKE = [
    *((prop, 200) for prop in fuzz_address.PROPERTIES),
    *(
        (prop, 6 if prop.name == "codec_decompression_bomb" else 200)
        for prop in fuzz_codecs.PROPERTIES
    ),
    *((prop, 60) for prop in fuzz_websocket.PROPERTIES),
    *((prop, 300 if prop.name == "plugin_parse_call" else 100) for prop in fuzz_plugin.PROPERTIES),
]


@pytest.fixture(scope="module", autouse=True)
def _servers():
    yield
    fuzz_websocket.shutdown()
    fuzz_plugin.shutdown()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("prop", "examples"), SMOKE, ids=[prop.name for prop, _ in SMOKE])
def test_fuzz_target_smoke(prop: Property, examples: int) -> None:
    prop.smoke(examples)


def test_fuzz_targets_are_not_collected_by_the_normal_run() -> None:
    """The campaign files are named fuzz_*.py: pytest's default test_*.py pattern skips them."""
    fuzz = Path(__file__).parent / "fuzz"
    assert sorted(p.name for p in fuzz.glob("test_*.py")) == []
    assert sorted(p.name for p in fuzz.glob("fuzz_*.py")) == [
        "fuzz_address.py",
        "fuzz_codecs.py",
        "fuzz_plugin.py",
        "fuzz_websocket.py",
    ]
