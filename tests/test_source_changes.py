"""Whatever the file system does to a source while it uploads, the outcome is one of two, through the real CLI
against the local store: the read set holds the bytes the path holds when Complete is sent, verified against a
hash of exactly those bytes (exit 0); or one line naming the source and what happened (exit 2).

The store sends at 1 MB/s per connection and the uploader sends one 256 KiB part at a time, so a 3 MiB source
takes about 12 s to send; the change is made as soon as the first part is acknowledged (read from ``--events``),
seconds before the last part and the identity check before Complete.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import REPO_ROOT, CliRun, run_cli_process
from tests.helpers import fastq_gz, upload_argv

pytestmark = pytest.mark.slow
KIB, MIB = 1024, 1024 * 1024
SIZE = 3 * MIB
SLOW = ("--part-size", "256KiB", "--max-concurrency", "1", "--fixed-concurrency", "--events", "--json")


async def upload_while(store: LocalStore, source: Path, env: dict[str, str], change: Callable[[], None]) -> CliRun:
    """Upload ``source``; call ``change()`` once the first part is acknowledged."""
    argv = upload_argv(store.url, source, extra=SLOW)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "async_uploader",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    changed = False

    async def watch(stream: asyncio.StreamReader) -> None:
        nonlocal changed
        async for raw in stream:
            line = raw.decode()
            lines.append(line)
            if not changed and json.loads(line).get("event") == "part":
                change()
                changed = True

    try:
        out, _ = await asyncio.wait_for(asyncio.gather(process.stdout.read(), watch(process.stderr)), 120)
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the upload did not finish within 150 s") from None
    assert changed, "".join(lines)
    assert process.returncode is not None
    return CliRun(process.returncode, out.decode(), "".join(lines), 0.0)


def messages(run: CliRun) -> list[str]:
    return [e["message"] for line in run.stderr_lines if (e := json.loads(line))["event"] == "log"]


def md5_inside(data: bytes) -> str:
    return hashlib.md5(gzip.decompress(data)).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "r1.fq.gz"
    path.write_bytes(fastq_gz(SIZE, seed=1))
    return path


@pytest.fixture
async def slow_store(tmp_path: Path) -> Any:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", connection_mbps=1.0)) as store:
        yield store


def replace_by_rename(path: Path, data: bytes) -> Callable[[], None]:
    def change() -> None:
        staged = path.with_name(path.name + ".new")
        staged.write_bytes(data)
        staged.replace(path)

    return change


def rewrite_in_place(path: Path, data: bytes) -> Callable[[], None]:
    def change() -> None:
        with open(path, "r+b") as f:  # the same inode, other bytes
            f.write(data)

    return change


@pytest.mark.parametrize("how", [replace_by_rename, rewrite_in_place], ids=["renamed over", "rewritten in place"])
async def test_a_source_changed_while_it_uploads_is_uploaded_and_verified_as_it_is_at_complete(
    source: Path, slow_store: LocalStore, cli_env: dict[str, str], how: Callable[[Path, bytes], Callable[[], None]]
) -> None:
    other = fastq_gz(SIZE, seed=2)
    run = await upload_while(slow_store, source, cli_env, how(source, other))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["verified"] is True
    assert result["verification"]["remote"] == result["verification"]["local"] == {"SOURCE1": md5_inside(other)}
    assert any("changed while it was uploaded" in m for m in messages(run))


def delete(path: Path) -> Callable[[], None]:
    return path.unlink


def truncate(path: Path) -> Callable[[], None]:
    return lambda: os.truncate(path, SIZE // 2)


def grow(path: Path) -> Callable[[], None]:
    def change() -> None:
        with open(path, "ab") as f:
            f.write(fastq_gz(64 * KIB, seed=3))

    return change


def into_a_directory(path: Path) -> Callable[[], None]:
    def change() -> None:
        path.unlink()
        path.mkdir()

    return change


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (delete, "was deleted while it was uploaded"),
        (truncate, "while it was uploaded"),
        (grow, f"changed size while it was uploaded ({SIZE:,} → {SIZE + 64 * KIB:,} bytes)"),
        (into_a_directory, "was replaced by a directory while it was uploaded"),
    ],
    ids=["deleted", "truncated", "grown", "replaced by a directory"],
)
async def test_a_source_that_cannot_be_sent_as_it_is_now_is_one_line_and_exit_2(
    source: Path, slow_store: LocalStore, cli_env: dict[str, str], how: Callable[[Path], Callable[[], None]], said: str
) -> None:
    run = await upload_while(slow_store, source, cli_env, how(source))
    assert run.returncode == 2, run.stderr
    errors = [e for line in run.stderr_lines if (e := json.loads(line))["event"] == "log" and e["level"] == "error"]
    assert len(errors) == 1 and said in errors[0]["message"] and str(source) in errors[0]["message"]
    assert "Traceback" not in run.stderr and run.stdout == ""


async def test_a_read_set_gone_from_the_store_says_so_and_restart_uploads_it_again(
    tmp_path: Path, source: Path, cli_env: dict[str, str]
) -> None:
    argv = upload_argv("URL", source, extra=("--part-size", "1MiB"))
    async with LocalStore(StoreOptions(data_dir=tmp_path / "first")) as store:
        first = await run_cli_process([a.replace("URL", store.url) for a in argv], env=cli_env)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(tmp_path / "first")
    async with LocalStore(StoreOptions(data_dir=tmp_path / "second")) as store:  # the store made anew
        again = await run_cli_process([a.replace("URL", store.url) for a in argv], env=cli_env)
        assert again.returncode == 1, again.stderr
        line = again.stderr_lines[-1]
        assert line.startswith(f"async-uploader: error: read set {first.stdout.strip()}, made by the checkpoint ")
        assert line.endswith(
            "is no longer in the store (deleted, or the store was made anew); run again with --restart to upload "
            "the files as a new read set"
        )
        restarted = await run_cli_process([a.replace("URL", store.url) for a in [*argv, "--restart"]], env=cli_env)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() != first.stdout.strip()
