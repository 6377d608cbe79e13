"""Shared fixtures: an emulated sequence store on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions


@pytest.fixture
async def local_store() -> AsyncIterator[LocalStore]:
    """A started store with default options (keys test/test), stopped after the test."""
    async with LocalStore(StoreOptions()) as store:
        yield store


@pytest.fixture
async def make_store() -> AsyncIterator[Callable[..., Awaitable[LocalStore]]]:
    """``await make_store(**StoreOptions fields)`` → a started store, stopped after the test."""
    stores: list[LocalStore] = []

    async def factory(**options: Any) -> LocalStore:
        store = await LocalStore(StoreOptions(**options)).start()
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


# --- command-line tests: run `python -m async_uploader` in a subprocess against a store on this loop -----------

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
async def tls_store(tmp_path: Any) -> AsyncIterator[tuple[Any, Any, LocalStore]]:
    """(front, ca_file, store): a local store behind a TLS front whose certificate a fresh trustme CA signed,
    that CA's PEM in ``ca_file``. ``front.url`` is https://localhost:PORT."""
    import trustme  # noqa: PLC0415 (only the TLS tests need it)

    from tests.helpers import TlsFront  # noqa: PLC0415 (helpers import the package under test)

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with LocalStore(StoreOptions()) as store, TlsFront(store.port, ca) as front:
        yield front, ca_file, store


@pytest.fixture
def test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The local store's test keys in this process's environment, no real AWS config, a private checkpoint home.

    Processes started afterwards (Dask workers, subprocesses) inherit the same environment.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("ASYNC_UPLOADER_HOME", str(tmp_path / "home"))


@pytest.fixture
def cli_env(tmp_path: Any) -> dict[str, str]:
    """Environment for CLI subprocesses: the store's test keys, no real AWS config, a private checkpoint home."""

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        ASYNC_UPLOADER_HOME=str(tmp_path / "uploader-home"),
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        COLUMNS="120",
    )
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> Callable[..., Awaitable[Any]]:
    """``await run_cli(*argv, stdin=b"", env={...}, limit=60)`` → CliRun(returncode, stdout, stderr, seconds)."""

    async def runner(*argv: str, **kwargs: Any) -> Any:
        env = {**cli_env, **kwargs.pop("env", {})}
        return await run_cli_process(list(argv), env=env, **kwargs)

    return runner


class CliRun:
    """What a CLI subprocess did: exit code, decoded output, wall time."""

    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


async def start_cli(argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """``python -m async_uploader ARGV`` started, its output piped: for a test that acts while it runs."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "async_uploader",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )


async def run_cli_process(
    argv: list[str],
    *,
    env: dict[str, str],
    stdin: bytes | None = None,
    limit: float = 60.0,
    cwd: Any = None,
    wrapper: list[str] | None = None,
) -> CliRun:
    """Run ``[WRAPPER] python -m async_uploader ARGV`` without blocking the loop (the store may serve on it)."""

    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *(wrapper or []),
        sys.executable,
        "-m",
        "async_uploader",
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd or REPO_ROOT,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"async-uploader {' '.join(argv)} did not finish within {limit} s") from None
    assert process.returncode is not None
    return CliRun(process.returncode, out.decode(), err.decode(), time.monotonic() - started)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed again (nothing else here binds fixed ports)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port where a connect never completes, as behind a firewall that drops packets: its listener
    (backlog 0) never accepts, and one connection already fills its accept queue, so Linux drops every later
    SYN (and each retransmission of it) instead of answering."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            yield port
