"""The progress bar under a pseudo-terminal, and plain output (no escape codes) when stderr is a file."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pexpect

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.emulator import LocalStore
from tests.conftest import REPO_ROOT
from tests.helpers import upload_argv

STORE = "1234567890"


def _argv(store: LocalStore, source: Path, *extra: str) -> list[str]:
    options = ("--part-size", "64KiB", "--max-concurrency", "1", "--no-checkpoint", *extra)
    return ["-m", "async_uploader", *upload_argv(store.url, source, name="tty", extra=options, progress=True)]


def _spawn_and_read(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    child = pexpect.spawn(
        sys.executable, argv, env=env, cwd=str(REPO_ROOT), dimensions=(30, 140), encoding="utf-8", timeout=60
    )
    output = child.read()  # until EOF
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -1), output


async def test_progress_bar_updates_under_a_terminal(
    make_store: Callable[..., Awaitable[LocalStore]], cli_env: dict[str, str], tmp_path: Path
) -> None:
    store = await make_store(latency_ms=40)
    source = tmp_path / "reads.fastq.gz"
    write_fastq_gz(source, 1_500_000)  # ~23 parts of 64 KiB, one at a time, each >= 40 ms: ~1 s of progress
    env = {**cli_env, "TERM": "xterm-256color"}
    code, output = await asyncio.to_thread(_spawn_and_read, _argv(store, source), env)
    assert code == 0, output
    percents = {int(p) for p in re.findall(r"(\d{1,3})%", output)}
    assert len(percents) >= 2, output  # the bar was redrawn with progress in between
    assert 100 in percents
    assert "\x1b[" in output  # a live display: rich moves the cursor to redraw
    assert "SOURCE1" in output and "parts" in output and "MB/s" in output
    assert output.strip().splitlines()[-1].strip().isdigit()  # the read set id still ends stdout


async def test_no_escape_codes_when_stderr_is_a_file(
    local_store: LocalStore, cli_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "reads.fastq.gz"
    write_fastq_gz(source, 300_000)
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *_argv(local_store, source, "--events"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=cli_env,
            cwd=REPO_ROOT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\x1b[" not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    kinds = {event["event"] for event in events}
    assert {"part", "progress", "result"} <= kinds
    progress = [event for event in events if event["event"] == "progress"]
    assert events[-1]["event"] == "result" and progress[-1]["fraction"] == 1.0
    assert out.decode().strip().isdigit()
