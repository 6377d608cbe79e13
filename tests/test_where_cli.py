"""What users of the AWS CLI, s5cmd and rclone expect: --dry-run sends nothing, --quiet prints only the result,
-v and --debug lines carry timestamps (--debug one line per request, never a credential), and --events is JSON
lines only, whatever happens."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.emulator.faults import FaultOptions, RequestKey, decide
from async_uploader.emulator.store import upload_identity
from tests.conftest import closed_port, run_cli_process
from tests.helpers import gzip_like, upload_argv

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} async-uploader: "
STORE_ID = "1234567890"
# What upload_argv asks the store for, and the parts of _sources at --part-size 64KiB.
UPLOAD_FIELDS = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "x", "name": "n"}
PARTS = [(source, number) for source in ("SOURCE1", "SOURCE2") for number in range(1, 5)]
ONLY_PARTS = frozenset({"UploadReadSetPart"})


def throttled_attempts(faults: FaultOptions, occurrence: int = 0) -> dict[tuple[str, int], int]:
    """From the store's own draw: how many times each part of the ``occurrence``-th upload of UPLOAD_FIELDS is
    throttled before it is taken (never more than 5: the upload then succeeds within the default 10 attempts)."""
    identity = upload_identity(STORE_ID, UPLOAD_FIELDS, occurrence)
    throttled = {}
    for source, number in PARTS:
        key = RequestKey("UploadReadSetPart", STORE_ID, identity, source, number)
        draws = [decide(faults, key, attempt) for attempt in range(6)]
        assert None in draws, f"{source} part {number} would be throttled 6 times in a row"
        throttled[(source, number)] = draws.index(None)
    return throttled


def assert_was_upload(store: LocalStore, occurrence: int) -> None:
    """The upload the store made is the one the draw was computed for (same fields, same place in line)."""
    made = [
        r["upload_id"] for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload" and r["upload_id"]
    ]
    assert store.state.upload_identity(STORE_ID, made[occurrence]) == upload_identity(
        STORE_ID, UPLOAD_FIELDS, occurrence
    )


def _sources(tmp_path: Path) -> list[Path]:
    return [gzip_like(tmp_path / f"r{n}.fq.gz", 200_000 + n, seed=n) for n in (1, 2)]


async def _upload(url: str, tmp_path: Path, env: dict[str, str], *extra: str) -> Any:
    argv = upload_argv(url, *_sources(tmp_path), extra=("--part-size", "64KiB", *extra))
    return await run_cli_process(argv, env=env)


async def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    no_credentials = {k: v for k, v in cli_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    async with LocalStore(StoreOptions()) as store:
        text = await _upload(store.url, tmp_path, no_credentials, "--dry-run")
        data = await _upload(store.url, tmp_path, no_credentials, "--dry-run", "--json", "--max-rate", "5")
        assert store.requests == []  # not even the preflight
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    assert "SOURCE1: 200,001 bytes in 4 parts of 65,536 bytes" in text.stdout
    assert "8 UploadReadSetPart" in text.stdout and "at least" in text.stdout
    plan = json.loads(data.stdout)
    assert plan["sources"]["SOURCE2"] == {"bytes": 200_002, "parts": 4, "lastPartBytes": 200_002 - 3 * 65536}
    assert (
        plan["requests"]["UploadReadSetPart"] == 8 and plan["secondsAtQuota"] == 1.8
    )  # 8 parts at 5/s, then a listing
    assert not (Path(cli_env["ASYNC_UPLOADER_HOME"])).exists()  # no checkpoint either


async def test_quiet_prints_only_the_read_set_id(tmp_path: Path, cli_env: dict[str, str]) -> None:
    async with LocalStore(StoreOptions()) as store:
        run = await _upload(store.url, tmp_path, cli_env, "--quiet", "--no-checkpoint")
    assert run.returncode == 0 and run.stderr == ""
    assert re.fullmatch(r"\d{10,36}\n", run.stdout), run.stdout


@pytest.mark.slow
async def test_verbose_and_debug_lines_have_timestamps_and_debug_has_one_line_per_request(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    secret = "debug-secret-must-not-appear"
    env = {**cli_env, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": "debug-token-must-not-appear"}
    faults = FaultOptions(seed=3, throttle_rate=0.4, operations=ONLY_PARTS)
    # Both uploads (the same fields: the store's first and second such) have a part throttled, so retried.
    assert max(throttled_attempts(faults, 0).values()) >= 1 and max(throttled_attempts(faults, 1).values()) >= 1
    options = StoreOptions(secret_key=secret, faults=faults)
    async with LocalStore(options) as store:
        again = ("--no-checkpoint", "--max-attempts", "30", "--if-exists", "upload")  # the same files, sent twice
        verbose = await _upload(store.url, tmp_path, env, "-v", *again)
        before = len(store.requests)
        debug = await _upload(store.url, tmp_path, env, "--debug", *again)
        sent = [e for e in store.requests[before:] if e["operation"] == "UploadReadSetPart"]
        assert_was_upload(store, 0)
        assert_was_upload(store, 1)
    assert verbose.returncode == 0 and debug.returncode == 0, verbose.stderr + debug.stderr
    retried = [line for line in verbose.stderr_lines if "retrying" in line]
    assert retried and all(re.match(STAMP + "INFO: ", line) for line in retried), verbose.stderr
    requests = [line for line in debug.stderr_lines if "DEBUG: PUT UploadReadSetPart " in line]
    shape = STAMP + r"DEBUG: PUT UploadReadSetPart (200|429), \d+ bytes back, \d+ bytes, [0-9.]+ s, attempt \d+$"
    odd = [line for line in requests if not re.match(shape, line)]
    assert requests and not odd, odd
    assert len(requests) == len(sent) > 8  # a line for every part request the store saw, retries included
    assert any("attempt 2" in line for line in requests), "a retried request shows its attempt"
    assert any("GET probe 404" in line for line in debug.stderr_lines)
    for text in (debug.stderr, verbose.stderr):
        assert secret not in text and "debug-token" not in text and "Signature=" not in text


def _events(stderr: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line parses
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)
    return events


async def test_events_are_json_lines_only_on_success_failure_and_bad_arguments(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    faults = FaultOptions(seed=1, throttle_rate=0.2, operations=ONLY_PARTS)
    throttled = throttled_attempts(faults)
    assert max(throttled.values()) >= 1, "no part would be throttled: the run would show no retry event"
    async with LocalStore(StoreOptions(faults=faults)) as store:
        ok = await _upload(store.url, tmp_path, cli_env, "--events", "--debug", "--no-checkpoint")
        assert_was_upload(store, 0)
        assert sum(r["fault"] == "throttle" for r in store.requests) == sum(throttled.values())
    down = await _upload(f"http://127.0.0.1:{closed_port()}", tmp_path, cli_env, "--events", "--no-checkpoint")
    bad = await _upload("http://127.0.0.1:1", tmp_path, cli_env, "--events", "--part-size", "lots")
    assert ok.returncode == 0 and down.returncode == 75 and bad.returncode == 2
    kinds = [event["event"] for event in _events(ok.stderr)]
    assert {"state", "part", "retry", "log", "result"} <= set(kinds) and [k for k in kinds if k != "log"][
        -1
    ] == "result"
    assert re.fullmatch(r"\d{10,36}\n", ok.stdout)  # stdout is unchanged: the read set id
    failure = _events(down.stderr)[-1]  # after the upload's state events, if any
    assert failure["event"] == "log" and failure["level"] == "error" and "cannot reach" in failure["message"]
    [usage] = _events(bad.stderr)
    assert usage["level"] == "error" and "--part-size" in usage["message"]
