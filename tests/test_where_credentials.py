"""Credentials off the event loop: a real credential_process (2 s, near-expiry credentials that rotate) in config
files in a temp dir, the local store verifying every signature against the rotating keys; one refresh in flight
shared by every request; the upload no slower than 1.2 × the same upload with static keys."""

from __future__ import annotations

import asyncio
import datetime
import json
import statistics
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import botocore.credentials
import pytest

from async_uploader.edge.signing import MANDATORY_REFRESH, CredentialSource
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import run_cli_process
from tests.helpers import gzip_like, upload_argv

KEYS = {f"AKIDROTATING{n:04d}": f"rotating-secret-{n:04d}" for n in range(200)}
PROCESS_SECONDS = 2.0


def credential_process(directory: Path, lifetime: float = 300.0) -> Path:
    """A credential_process script: takes 2 s, hands out the next key of KEYS, expiring ``lifetime`` s from now
    (5 minutes: botocore wants a refresh on every use from 10 minutes before expiry). Counts its runs in a file."""
    script = directory / "credentials.py"
    counter = directory / "runs"
    script.write_text(
        textwrap.dedent(
            f"""\
            import datetime, json, pathlib, time
            counter = pathlib.Path({str(counter)!r})
            runs = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(runs + 1))
            time.sleep({PROCESS_SECONDS})
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds={lifetime})
            print(json.dumps({{
                "Version": 1,
                "AccessKeyId": "AKIDROTATING%04d" % runs,
                "SecretAccessKey": "rotating-secret-%04d" % runs,
                "SessionToken": "token-%04d" % runs,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }}))
            """
        )
    )
    return script


def runs_of(directory: Path) -> int:
    counter = directory / "runs"
    return int(counter.read_text()) if counter.exists() else 0


def _env(cli_env: dict[str, str], directory: Path, script: Path | None) -> dict[str, str]:
    config = directory / "config"
    if script is None:
        config.write_text("[default]\nregion = us-east-1\n")
        return {
            **cli_env,
            "AWS_CONFIG_FILE": str(config),
            "AWS_ACCESS_KEY_ID": "AKIDROTATING0199",
            "AWS_SECRET_ACCESS_KEY": "rotating-secret-0199",
        }
    config.write_text(f"[profile rotating]\nregion = us-east-1\ncredential_process = {sys.executable} {script}\n")
    env = {k: v for k, v in cli_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return {**env, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "rotating"}


@pytest.mark.slow
async def test_a_slow_expiring_credential_process_costs_the_upload_at_most_a_fifth(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Interleaved runs, medians compared: the upload's own seconds (the first credential fetch, before any request,
    is reported separately: nothing can be signed before it)."""
    sources = [gzip_like(tmp_path / f"r{n}.fq.gz", 40 * 16 * 1024, seed=n) for n in (1, 2)]
    script = credential_process(tmp_path)
    options = StoreOptions(access_key="AKIDUNUSED", secret_key="unused", extra_keys=KEYS, latency_ms=120)
    times: dict[str, list[float]] = {"static": [], "process": []}
    walls: dict[str, list[float]] = {"static": [], "process": []}
    async with LocalStore(options) as store:
        argv = upload_argv(
            store.url,
            *sources,
            extra=(
                "--part-size",
                "16KiB",
                "--max-concurrency",
                "4",
                "--no-checkpoint",
                "--json",
                "--if-exists",
                "upload",
            ),
        )
        for _ in range(3):
            for kind in ("static", "process"):
                env = _env(cli_env, tmp_path, script if kind == "process" else None)
                run = await run_cli_process(argv, env=env, limit=120)
                assert run.returncode == 0, run.stderr
                times[kind].append(json.loads(run.stdout)["seconds"])
                walls[kind].append(run.seconds)
    static, process = statistics.median(times["static"]), statistics.median(times["process"])
    report = f"upload seconds static {times['static']} process {times['process']}; wall {walls}"
    print(f"\n{report}\nmedian static {static:.2f} s, process {process:.2f} s, ratio {process / static:.3f}")
    assert static > 1.5, f"the upload is too short to measure a stall: {report}"
    assert process <= 1.2 * static, report
    # each upload: the chain's run, then refreshes in the background (5-minute credentials), never one per request
    refreshes = runs_of(tmp_path)
    assert 3 * 2 <= refreshes <= 3 * 4, f"{refreshes} credential_process runs; {report}"


def _refreshable(expires_in: float, calls: list[float], delay: float) -> botocore.credentials.RefreshableCredentials:
    def refresh() -> dict[str, str]:
        calls.append(time.monotonic())
        time.sleep(delay)
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
        return {"access_key": f"AKID{len(calls)}", "secret_key": "s", "token": "t", "expiry_time": later.isoformat()}

    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
    return botocore.credentials.RefreshableCredentials.create_from_metadata(
        {"access_key": "AKID0", "secret_key": "s", "token": "t", "expiry_time": soon.isoformat()},
        refresh_using=refresh,
        method="test",
    )


async def _lag_while(work: Any) -> tuple[Any, float]:
    """Run ``work`` while a ticker measures the event loop's longest stall."""
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - before - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        done.set()
        await ticker
    return result, worst


async def test_near_expiry_one_background_refresh_and_requests_never_wait() -> None:
    calls: list[float] = []
    source = CredentialSource(credentials=_refreshable(300.0, calls, delay=0.5))

    async def many() -> list[str | None]:
        snapshots: list[str | None] = []
        for _ in range(40):  # 40 "requests" over about 0.8 s, while a 0.5 s refresh runs in its thread
            snapshots.append((await source.fresh()).access_key)
            await asyncio.sleep(0.02)
        return snapshots

    keys, lag = await _lag_while(many())
    await source.aclose()
    assert lag < 0.2, f"the event loop stalled {lag:.3f} s"
    assert len(calls) == 1 and source.refreshes == 1  # one refresh for all of them, spaced before the next
    assert keys[0] == "AKID0" and keys[-1] == "AKID1"  # the old snapshot until the new one was there


async def test_expired_credentials_wait_together_for_one_refresh() -> None:
    calls: list[float] = []
    source = CredentialSource(credentials=_refreshable(MANDATORY_REFRESH / 2, calls, delay=0.3))
    threads_before = threading.active_count()
    results, lag = await _lag_while(asyncio.gather(*(source.fresh() for _ in range(50))))
    await source.aclose()
    assert len(calls) == 1 and {r.access_key for r in results} == {"AKID1"}
    assert lag < 0.2 and threading.active_count() <= threads_before + 8
