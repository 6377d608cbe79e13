"""Fault decisions are pure and order-independent; quotas, pacing and the request log."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from async_uploader.emulator import FaultOptions, LocalStore, StoreOptions
from async_uploader.emulator.faults import Fault, Pacer, QuotaBucket, RequestKey, decide, reset_offset

STORE_ID = "1234567890"
MakeStore = Callable[..., Awaitable[LocalStore]]
FIELDS = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "n"}


def test_decisions_are_pure_and_follow_the_rates() -> None:
    options = FaultOptions(seed=7, throttle_rate=0.2, error_rate=0.1, reset_rate=0.05)
    keys = [RequestKey("UploadReadSetPart", STORE_ID, "9" * 18, "SOURCE1", n) for n in range(1, 4001)]
    first = [decide(options, key, 0) for key in keys]
    assert first == [decide(options, key, 0) for key in reversed(keys)][::-1]
    counts = {fault: first.count(fault) for fault in (*Fault, None)}
    assert 700 < counts[Fault.THROTTLE] < 900
    assert 300 < counts[Fault.ERROR_500] + counts[Fault.ERROR_503] < 500
    assert 120 < counts[Fault.RESET] < 280
    # Another seed, another attempt: other decisions.
    assert first != [decide(FaultOptions(seed=8, throttle_rate=0.2), key, 0) for key in keys]
    assert first != [decide(options, key, 1) for key in keys]
    assert decide(FaultOptions(), keys[0], 0) is None
    offsets = {reset_offset(options, key, 0, 1000) for key in keys[:100]}
    assert min(offsets) >= 100 and max(offsets) <= 900 and len(offsets) > 50


def test_fault_options_validated() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        FaultOptions(error_rate=1.5)
    with pytest.raises(ValueError, match="exceed 1"):
        FaultOptions(error_rate=0.6, throttle_rate=0.6)
    with pytest.raises(ValueError, match="unknown quota kind"):
        StoreOptions(quotas={"uploads": 1.0})
    assert StoreOptions.service_quotas() == {"control": 1.0, "parts": 10.0, "listings": 5.0}


def test_quota_bucket_and_pacer_with_a_fake_clock() -> None:
    now = [0.0]
    bucket = QuotaBucket(2.0, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert bucket.try_take() and not bucket.try_take()
    pacer = Pacer(1_000_000, clock=lambda: now[0])
    assert pacer.delay_after(500_000) == pytest.approx(0.5)
    assert pacer.delay_after(500_000) == pytest.approx(1.0)
    now[0] = 10.0  # idle time earns no burst credit
    assert pacer.delay_after(100_000) == pytest.approx(0.1)


def signed_headers(method: str, url: str, body: bytes) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(Credentials("test", "test"), "omics", "us-east-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


async def put_parts(
    store: LocalStore, upload_id: str, order: list[tuple[str, int]]
) -> dict[tuple[str, int], list[str | None]]:
    """PUT each (source, number) twice in the given order; return the faults the store logged per part."""
    async with aiohttp.ClientSession() as session:
        for source, number in order + order:
            url = f"{store.url}/sequencestore/{STORE_ID}/upload/{upload_id}/part"
            url += f"?partSource={source}&partNumber={number}"
            body = b"@" * 2000
            try:
                async with session.put(url, data=body, headers=signed_headers("PUT", url, body)) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
    seen: dict[tuple[str, int], list[str | None]] = {}
    for record in store.requests:
        seen.setdefault((record["source"], record["part_number"]), []).append(record["fault"])
    return seen


async def test_same_seed_same_faults_whatever_the_order(make_store: MakeStore) -> None:
    faults = FaultOptions(seed=42, throttle_rate=0.3, error_rate=0.2, reset_rate=0.1)
    parts = [(s, n) for s in ("SOURCE1", "SOURCE2") for n in range(1, 16)]
    shuffled = parts[:]
    random.Random(1).shuffle(shuffled)
    results = []
    for order in (parts, shuffled):
        store = await make_store(faults=faults)
        # The same upload id in both stores: fault decisions hash the request's identity.
        upload = store.state.create_upload(STORE_ID, dict(FIELDS))
        store.state.stores[STORE_ID].uploads["5" * 18] = store.state.stores[STORE_ID].uploads.pop(upload["uploadId"])
        store.state.stores[STORE_ID].uploads["5" * 18].upload_id = "5" * 18
        results.append(await put_parts(store, "5" * 18, order))
    assert results[0] == results[1]
    flat = [f for faults_seen in results[0].values() for f in faults_seen]
    assert {"throttle", "reset", None} <= set(flat)


async def test_request_log_lines(tmp_path: Path, make_store: MakeStore) -> None:
    log = tmp_path / "requests.jsonl"
    store = await make_store(log_path=log, faults=FaultOptions(throttle_rate=1.0))
    upload = store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
    await put_parts(store, upload, [("SOURCE1", 1)])
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == store.requests and len(lines) == 2
    keys = {
        "time",
        "operation",
        "source",
        "part_number",
        "bytes",
        "status",
        "error_code",
        "fault",
        "duration_ms",
        "store_id",
        "upload_id",
    }
    assert set(lines[0]) == keys
    assert lines[0]["operation"] == "UploadReadSetPart" and lines[0]["status"] == 429
    assert lines[0]["error_code"] == "ThrottlingException" and lines[0]["fault"] == "throttle"
    assert (lines[0]["source"], lines[0]["part_number"], lines[0]["upload_id"]) == ("SOURCE1", 1, upload)


async def test_connection_cap_still_delivers(make_store: MakeStore) -> None:
    store = await make_store(connection_mbps=50.0, latency_ms=1.0)
    upload = store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
    seen = await put_parts(store, upload, [("SOURCE1", 1), ("SOURCE1", 2)])
    assert all(f is None for faults_seen in seen.values() for f in faults_seen)
    assert [r["status"] for r in store.requests] == [200] * 4


def test_cli_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    command = [sys.executable, "-m", "async_uploader.emulator", "--discard", "--log", str(log), "--service-quotas"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")

            async def probe() -> int:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(f"{url}/sequencestore/{STORE_ID}/uploads") as response,
                ):
                    return response.status

            assert asyncio.run(probe()) == 403
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            # After the URL, for people: the keys, the store ids, an upload command; nothing more.
            rest = proc.stdout.read().splitlines()
            assert [line.split(":")[0] for line in rest] == ["keys", "store ids", "upload with"], rest
        finally:
            if proc.poll() is None:
                proc.kill()
    assert json.loads(log.read_text())["status"] == 403
