"""The first hour on a fresh machine: the README's Install commands work as written, a wheel
builds without a warning and installs and imports in a fresh venv, and the test suite does not
care where the checkout lives (a private mode-700 directory, a path with spaces).

Each test works on a copy of the checkout (the files git would commit), so nothing here touches
the working tree or its .venv. They download wheels from the package index: slow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# pip on this kind of machine names index locations it skips; that is the machine, not us.
_MACHINE_NOISE = re.compile(r"Location '.*' is ignored|pip version|upgrade pip", re.I)


def copy_checkout(destination: Path) -> Path:
    """The files of the checkout git knows about (committed or not, never ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / os.fsdecode(raw)
        if source.is_file():
            target = destination / os.fsdecode(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def warnings_in(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if re.search(r"warn|deprecat", line, re.I) and not _MACHINE_NOISE.search(line)
    ]


def readme_block(section: str, index: int) -> str:
    """The `index`-th ```bash block under the README heading `## section`."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, re.S)[index]


def bash(script: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_readme_install_works_as_written(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "dialkit")
    result = bash(readme_block("Install", 0), checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dial 0.1.0" in result.stdout
    assert "{'columns': ['one'], 'values': [[1]]}" in result.stdout
    assert warnings_in(result.stdout + result.stderr) == []


def test_wheel_builds_cleanly_and_works_in_a_fresh_venv(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "dialkit")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist")],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert warnings_in(built.stdout + built.stderr) == []
    (wheel,) = (tmp_path / "dist").glob("dialkit-*.whl")

    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "dial/py.typed" in names
    assert "dial/databases/backends/sqlite.py" in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]

    fresh = tmp_path / "fresh venv"  # a space in the path, too
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the venv
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert warnings_in(installed.stdout + installed.stderr) == []
    check = (
        "import dial, dial.aio, dial.databases, dial.fmz\n"
        "from dial import Dial, last_error\n"
        f"assert dial.__file__.startswith({str(fresh)!r}), dial.__file__\n"
        "assert Dial('sqlite3://:memory:') is None\n"  # aiosqlite is an extra: not installed
        "print(last_error())\n"
    )
    ran = subprocess.run(
        [str(python), "-W", "error", "-c", check],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
    )
    assert ran.returncode == 0, ran.stderr
    assert "install dialkit's [sqlite] extra" in ran.stdout
    cli = subprocess.run([str(fresh / "bin" / "dial"), "--version"], capture_output=True, text=True)
    assert cli.stdout.strip() == "dial 0.1.0", cli


def test_the_suite_runs_from_a_private_directory_with_spaces(tmp_path: Path) -> None:
    """Cloned under a mode-700 parent (as under /root) at a path with spaces: the tests that
    start database daemons (their users cannot enter the checkout) still pass."""
    private = tmp_path / "private home"
    private.mkdir(mode=0o700)
    checkout = copy_checkout(private / "dial kit")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            "tests/test_servers_state.py",
            "tests/test_databases_restart.py::test_postgres_restart",
            "tests/test_api.py::test_everything_in_all_is_importable",
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(checkout)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout
    for path in checkout.rglob("*"):  # the daemons left nothing in the checkout
        assert "pgdata" not in path.name and "postgres-" not in path.name, path
