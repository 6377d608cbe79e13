"""The real CLI against endpoints that misbehave: never answering, hanging in Create, a checkpoint disk that fills.

Every case is a subprocess of ``python -m async_uploader`` with a bound on its wall time, against a server in this
process (a raw TCP server, a small aiohttp app) or the local store. The tests wait for what the process says or does
(a request arriving, a line on stderr), never a guessed time; the wall-clock bounds left are the point of their tests
(a deadline, a grace), each several times what the process takes on an idle machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import run_cli_process, start_cli
from tests.helpers import gzip_like, upload_argv


@contextlib.asynccontextmanager
async def silent_endpoint() -> AsyncIterator[str]:
    """Accepts TCP connections and never answers a byte."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


@contextlib.asynccontextmanager
async def create_hangs() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Answers ListReadSets with none, anything else with a 404 (so the preflight passes), and holds every Create
    forever."""
    seen = asyncio.Event()

    async def create(request: web.Request) -> web.StreamResponse:
        seen.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def other(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "no such route"}, status=404)

    async def no_read_sets(request: web.Request) -> web.StreamResponse:
        return web.json_response({"readSets": []})  # the look for these files in the store finds none

    app = web.Application()
    app.router.add_post("/sequencestore/{store}/upload", create)
    app.router.add_post("/sequencestore/{store}/readsets", no_read_sets)
    app.router.add_route("*", "/{tail:.*}", other)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_an_endpoint_that_never_answers_fails_in_seconds_with_one_line(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 64 * 1024)
    async with silent_endpoint() as url:
        run = await run_cli_process(upload_argv(url, source), env=cli_env, limit=60)
    assert run.returncode != 0 and run.seconds < 60
    assert run.stderr_lines == [
        f"async-uploader: error: no answer from {url} within 10 s; check --endpoint-url and that the store is running"
    ]


@pytest.mark.slow
async def test_a_create_that_never_answers_ends_at_the_operation_deadline(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 64 * 1024)
    async with create_hangs() as (url, _):
        extra = ("--read-timeout", "1", "--operation-timeout", "3")
        run = await run_cli_process(upload_argv(url, source, extra=extra), env=cli_env, limit=30)
    assert run.returncode != 0 and run.seconds < 20
    [line] = run.stderr_lines
    assert line.startswith("async-uploader: error: CreateMultipartReadSetUpload: no answer within 3 s"), line
    assert "no bytes of the answer arrived for 1 s" in line


async def wait_exit(process: asyncio.subprocess.Process, limit: float, err_before: str = "") -> tuple[int, str, float]:
    """The exit code, stderr (after ``err_before``, what was read of it already) and the seconds it took to exit."""
    started = time.monotonic()
    try:
        _, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"the uploader did not exit within {limit} s") from None
    assert process.returncode is not None
    return process.returncode, err_before + err.decode(), time.monotonic() - started


async def read_stderr_until(process: asyncio.subprocess.Process, wanted: str, limit: float = 30) -> str:
    """Read the uploader's stderr line by line until one contains ``wanted`` (bounded); what was read."""
    assert process.stderr is not None
    lines: list[str] = []

    async def read() -> None:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode():
            lines.append(line)
            if wanted in line:
                return
        raise AssertionError(f"stderr ended without {wanted!r}:\n{''.join(lines)}")

    try:
        await asyncio.wait_for(read(), limit)
    except TimeoutError:
        raise AssertionError(f"no {wanted!r} on stderr within {limit} s:\n{''.join(lines)}") from None
    return "".join(lines)


async def test_sigterm_while_create_hangs_exits_75_within_the_grace(tmp_path: Path, cli_env: dict[str, str]) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 64 * 1024)
    async with create_hangs() as (url, seen):
        process = await start_cli(upload_argv(url, source, extra=("--stop-grace", "2")), cli_env)
        await asyncio.wait_for(seen.wait(), 30)
        process.send_signal(signal.SIGTERM)
        code, err, seconds = await wait_exit(process, 30)
    assert code == 75, err
    # The Create never answers, so only the grace ends the run: not before it, and not at the default 10 s. The
    # exit itself takes well under a second on an idle machine; 7 s leaves room for a busy one.
    assert 2 <= seconds < 2 + 7, seconds
    assert "Traceback" not in err and "To resume, run:" in err


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM, signal.SIGINT)])
async def test_a_second_signal_stops_at_once(tmp_path: Path, cli_env: dict[str, str], signals: tuple[int, ...]) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 64 * 1024)
    async with create_hangs() as (url, seen):
        process = await start_cli(upload_argv(url, source, extra=("--stop-grace", "60")), cli_env)
        await asyncio.wait_for(seen.wait(), 30)
        process.send_signal(signals[0])
        err_before = await read_stderr_until(process, "stopping; work in flight gets 60 s")
        for signum in signals[1:]:
            process.send_signal(signum)
        code, err, seconds = await wait_exit(process, 30, err_before)
    assert code == 75, err
    assert seconds < 10, seconds  # at once: the 60 s grace was cut short (idle: a fraction of a second)
    assert "Traceback" not in err


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
async def test_rerunning_a_finished_upload_reports_done_and_every_event_fits_the_schema(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    sources = [gzip_like(tmp_path / f"r{n}.fq.gz", 300 * 1024) for n in (1, 2)]
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, *sources, extra=("--events", "--part-size", "64KiB"))
        first = await run_cli_process(argv, env=cli_env, limit=60)
        again = await run_cli_process(argv, env=cli_env, limit=60)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout
    for run in (first, again):
        for event in _events(run.stderr):
            jsonschema.validate(event, EVENT_SCHEMA)
    states = [e["state"] for e in _events(again.stderr) if e["event"] == "state"]
    assert states == ["waiting", "verifying", "done"]  # the checkpoint records the read set: only wait, verify
    last = [e for e in _events(again.stderr) if e["event"] == "progress"][-1]
    assert last["state"] == "done" and last["resumedParts"] == 10 and last["partsDone"] == 10


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Any:
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc).encode()
        pytest.skip(f"cannot mount a small tmpfs here ({detail.decode().strip()}): the full-disk case needs one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.mark.slow
async def test_a_full_checkpoint_disk_is_one_line_and_the_same_command_resumes(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    sources = [gzip_like(tmp_path / f"r{n}.fq.gz", 600 * 1024) for n in (1, 2)]
    with small_tmpfs(tmp_path / "small", "64k") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (56 * 1024))  # leaves two pages for the checkpoint: it fills mid-upload
        checkpoint = disk / "ck.jsonl"
        async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
            extra = ("--part-size", "4KiB", "--checkpoint", str(checkpoint), "--max-concurrency", "8")
            argv = upload_argv(store.url, *sources, extra=extra)
            full = await run_cli_process(argv, env=cli_env, limit=60)
            assert full.returncode == 1, full.stderr
            [line] = full.stderr_lines
            assert line.startswith(f"async-uploader: error: cannot write checkpoint {checkpoint}: No space left"), line
            assert "Traceback" not in full.stderr and "never retrieved" not in full.stderr
            filler.unlink()
            resumed = await run_cli_process(argv, env=cli_env, limit=60)
            assert resumed.returncode == 0, resumed.stderr
            assert "parts kept from before" in resumed.stderr
            creates = [r for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
            assert len(creates) == 1
    assert os.path.getsize(sources[0]) == 600 * 1024
