"""Start-up: a command imports only what it uses.

Each case runs a real ``python -X importtime -m async_uploader ...`` process (from an empty folder, so the package
comes from the path under test, not the working directory) and reads from its import log which modules it
loaded: ``--version`` and every ``--help`` load neither the engine's libraries (aiohttp, botocore, anyio), nor
rich, numpy, Dask, uvloop, nor the local store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

HEAVY = (
    "aiohttp",
    "botocore",
    "anyio",
    "aiofiles",
    "rich",
    "numpy",
    "dask",
    "distributed",
    "uvloop",
    "async_uploader.engine",
    "async_uploader.edge",
    "async_uploader.fleet",
    "async_uploader.emulator",
)
"""Modules (and their submodules) that ``--version`` and ``--help`` must not import."""

COMMANDS = [
    "upload",
    "batch",
    "serve",
    "uploads",
    "parts",
    "abort",
    "verify",
    "status",
    "ls",
    "etag",
    "man",
    "completion",
]


def imported(argv: list[str], tmp_path: Path) -> tuple[str, set[str]]:
    """Run the command line with ``argv``; its stdout and the names of every module it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "async_uploader", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    names = {line.rpartition("|")[2].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "async_uploader.cli" in names, run.stderr[-2000:]  # the log is read, and it is this package's
    return run.stdout, names


def heavy_in(names: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        name
        for name in names
        if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)
        and not any(name == ok or name.startswith(ok + ".") for ok in allowed)
    )


def test_version_reads_the_versions_without_importing_the_libraries(tmp_path: Path) -> None:
    out, names = imported(["--version"], tmp_path)
    assert out.startswith("async-uploader ") and "aiohttp " in out and "botocore " in out
    assert heavy_in(names) == []


def test_help_imports_no_library_of_the_engine_no_tls_and_no_store(tmp_path: Path) -> None:
    out, names = imported(["--help"], tmp_path)
    assert "upload" in out and "serve" in out
    assert heavy_in(names) == []
    assert "ssl" not in names and "asyncio" not in names and "importlib.metadata" not in names


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_imports_only_the_parser(command: str, tmp_path: Path) -> None:
    out, names = imported([command, "--help"], tmp_path)
    assert out.startswith(f"usage: async-uploader {command}")
    # serve's options are the local store's own, read from its option module (man and completion show them too):
    # never its server (aiohttp.web)
    allowed = ("async_uploader.emulator",) if command in ("serve", "man", "completion") else ()
    assert heavy_in(names, allowed) == []
    if allowed:
        assert "async_uploader.emulator.server" not in names and "async_uploader.emulator.app" not in names
    if command == "upload":
        assert "ssl" not in names and "asyncio" not in names
