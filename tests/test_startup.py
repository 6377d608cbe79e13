"""Start-up: a command imports only what it uses.

Each case runs a real ``python -X importtime -m async_uploader ...`` process (from an empty folder, so the package
comes from the path under test, not the working directory) and reads from its import log which modules it
loaded: ``--version`` and every ``--help`` load neither the engine's libraries (aiohttp, botocore, anyio), nor
rich, numpy, Dask, uvloop, nor the local store. A real upload into the local store, over HTTP or HTTPS, never
loads aiohttp (its requests go over the client's own connections); only an ``https://`` proxy, which only aiohttp
can speak TLS to, does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import REPO_ROOT, closed_port, run_cli_process
from tests.helpers import HttpProxy, TlsFront, gzip_like, upload_argv

PROXY_VARIABLES = ("no_proxy", "http_proxy", "https_proxy", "all_proxy")

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


# --- a real upload into the local store: the client's requests never load aiohttp, unless only it can send them ---


def _loaded(stderr: str) -> set[str]:
    """The modules a process started with ``-X importtime`` (PYTHONPROFILEIMPORTTIME) imported."""
    names = {line.rpartition("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert "async_uploader.edge.transport" in names, stderr[-2000:]  # the log is read, and the transport ran
    return names


def _aiohttp_in(names: set[str]) -> list[str]:
    return sorted(name for name in names if name == "aiohttp" or name.startswith("aiohttp."))


async def _upload_logging_imports(
    url: str, tmp_path: Path, cli_env: dict[str, str], env: dict[str, str], *extra: str
) -> Any:
    """``async-uploader upload`` of a tiny pair into ``url``, logging its imports; no proxy unless ``env`` names one."""
    first, second = gzip_like(tmp_path / "r1.fq.gz", 3000), gzip_like(tmp_path / "r2.fq.gz", 3000)
    argv = upload_argv(url, first, second, name=f"startup-{len(extra)}", extra=("--no-checkpoint", *extra))
    clean = {name: value for name, value in cli_env.items() if name.lower() not in PROXY_VARIABLES}
    return await run_cli_process(argv, env={**clean, "PYTHONPROFILEIMPORTTIME": "1", **env}, cwd=tmp_path)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_upload_into_the_local_store_never_imports_aiohttp(
    scheme: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Create, the parts, Complete, the status and the ETag: every request over the client's own connections,
    plain or TLS, with and without waiting; an https:// proxy set for the scheme not used changes nothing."""
    import trustme  # noqa: PLC0415 (only this case needs it)

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    unused = "HTTP_PROXY" if scheme == "https" else "HTTPS_PROXY"
    env = {"AWS_CA_BUNDLE": str(ca_file), unused: f"https://127.0.0.1:{closed_port()}"}
    async with LocalStore(StoreOptions()) as store, TlsFront(store.port, ca) as front:
        url = front.url if scheme == "https" else store.url
        for extra in ((), ("--no-wait",)):
            run = await _upload_logging_imports(url, tmp_path, cli_env, env, *extra)
            assert run.returncode == 0, run.stderr[-2000:]
            assert _aiohttp_in(_loaded(run.stderr)) == []
        assert front.connections >= (1 if scheme == "https" else 0)
        assert len(store.requests) >= 8


async def test_an_https_proxy_is_the_one_route_that_imports_aiohttp(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Only aiohttp speaks TLS to a proxy: an upload through an https:// proxy (a TLS front before a real forward
    proxy) loads it, and every request arrives through that proxy."""
    import trustme  # noqa: PLC0415 (only this case needs it)

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with HttpProxy(tmp_path / "proxy") as proxy:
        async with LocalStore(StoreOptions()) as store, TlsFront(proxy.port, ca) as front:
            env = {"HTTP_PROXY": front.url, "AWS_CA_BUNDLE": str(ca_file)}
            run = await _upload_logging_imports(store.url, tmp_path, cli_env, env)
            assert run.returncode == 0, run.stderr[-2000:]
            assert "aiohttp" in _loaded(run.stderr)
            assert front.connections >= 1 and len(store.requests) >= 8
        # proxy.py logs a line per connection, when the connection ends: waited for, at most 10 s
        forwarded = f" PUT 127.0.0.1:{store.port}/sequencestore/"
        deadline = time.monotonic() + 10
        while not any(forwarded in line for line in proxy.access_lines()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert any(forwarded in line for line in proxy.access_lines()), proxy.access_lines()[-5:]
