"""Where the test daemons keep their state: never inside the checkout."""

from __future__ import annotations

import os
import stat

from tests.servers.base import ROOT, STATE, temp_dir


def test_daemon_state_lives_outside_the_checkout() -> None:
    """A checkout under a mode-700 parent (/root) must not hold the daemons' data directories:
    postgres, mysql and clickhouse run as their own users and could not reach them."""
    made = temp_dir("probe-")
    try:
        assert not made.resolve().is_relative_to(ROOT.resolve())
        for parent in [STATE, *STATE.parents]:
            mode = os.stat(parent).st_mode
            assert mode & stat.S_IXOTH, f"{parent} is not traversable by other users"
    finally:
        made.rmdir()
