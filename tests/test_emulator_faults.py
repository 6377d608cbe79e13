"""Fault decisions are pure and order-independent, a seeded store repeats its ids; quotas, pacing, request log."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from async_uploader.emulator import FaultOptions, LocalStore, StoreOptions
from async_uploader.emulator.app import ROUTES
from async_uploader.emulator.faults import (
    OPERATIONS,
    PACER_SLACK,
    Fault,
    Pacer,
    QuotaBucket,
    RequestKey,
    decide,
    reset_offset,
)
from async_uploader.emulator.store import State, create_identity, upload_identity
from tests.store_helpers import create, put
from tests.store_serve import serve

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


def test_faults_know_every_operation_the_store_answers() -> None:
    assert set(OPERATIONS) == {operation for _, _, operation in ROUTES}


def test_fault_options_validated() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        FaultOptions(error_rate=1.5)
    with pytest.raises(ValueError, match="exceed 1"):
        FaultOptions(error_rate=0.6, throttle_rate=0.6)
    with pytest.raises(ValueError, match="unknown operation 'UploadPart'"):
        FaultOptions(operations=frozenset({"UploadReadSetPart", "UploadPart"}))
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
    now[0] = 1.52  # woken 20 ms after the 1.5 s the schedule said: the 20 ms are made up at once
    assert pacer.delay_after(20_000) == pytest.approx(0.0)
    assert pacer.delay_after(100_000) == pytest.approx(0.1)
    now[0] = 10.0  # idle time earns no more credit than the slack
    assert pacer.delay_after(100_000) == pytest.approx(0.1 - PACER_SLACK)


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
        upload = store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
        results.append(await put_parts(store, upload, order))
    assert results[0] == results[1]
    flat = [f for faults_seen in results[0].values() for f in faults_seen]
    assert {"throttle", "reset", None} <= set(flat)


def test_fault_draws_hang_on_the_uploads_fields_not_its_random_id(tmp_path: Path) -> None:
    first, second = State(tmp_path / "a", discard=True), State(tmp_path / "b", discard=True)
    ids = [state.create_upload(STORE_ID, dict(FIELDS))["uploadId"] for state in (first, second)]
    assert ids[0] != ids[1]  # no seed: ids as random as AWS's
    assert first.upload_identity(STORE_ID, ids[0]) == second.upload_identity(STORE_ID, ids[1])
    # A second upload with the same fields is another upload; one with other fields too.
    again = first.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
    other = first.create_upload(STORE_ID, {**FIELDS, "name": "m"})["uploadId"]
    identities = {first.upload_identity(STORE_ID, u) for u in (ids[0], again, other)}
    assert len(identities) == 3
    # A Create's key ignores its clientToken (a client makes a new one each run) and the order of its fields.
    assert create_identity(STORE_ID, {**FIELDS, "clientToken": "a"}) == create_identity(
        STORE_ID, dict(reversed(list(FIELDS.items())))
    )
    # What the store will call the first and second upload with given fields can be told before it makes them.
    assert first.upload_identity(STORE_ID, ids[0]) == upload_identity(STORE_ID, dict(FIELDS))
    assert first.upload_identity(STORE_ID, again) == upload_identity(STORE_ID, dict(FIELDS), 1)


class Client:
    """Signed requests to a store, each repeated until answered 200 (at most 30 times): what a patient client does."""

    def __init__(self, session: aiohttp.ClientSession, store: LocalStore) -> None:
        self.session, self.base = session, f"{store.url}/sequencestore/{STORE_ID}"

    async def call(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        url = self.base + path
        for _ in range(30):
            try:
                async with self.session.request(
                    method, url, data=body, headers=signed_headers(method, url, body)
                ) as response:
                    reply = await response.read()
                    if response.status == 200:
                        return dict(json.loads(reply))
            except aiohttp.ClientError:
                pass
        raise AssertionError(f"{method} {path} never succeeded")

    async def upload(self, name: str, parts: list[tuple[str, int]]) -> tuple[str, list[str], str]:
        """Create (with a fresh clientToken), send ``parts``, Complete: the upload id, checksums, read set id."""
        create = json.dumps({**FIELDS, "name": name, "clientToken": uuid.uuid4().hex}).encode()
        upload_id = str((await self.call("POST", "/upload", create))["uploadId"])
        listed = []
        for source, number in parts:
            path = f"/upload/{upload_id}/part?partSource={source}&partNumber={number}"
            checksum = (await self.call("PUT", path, name.encode() * 500))["checksum"]
            listed.append({"partSource": source, "partNumber": number, "checksum": checksum})
        complete = json.dumps({"parts": listed}).encode()
        read_set_id = str((await self.call("POST", f"/upload/{upload_id}/complete", complete))["readSetId"])
        return upload_id, [str(p["checksum"]) for p in listed], read_set_id


async def run_script(store: LocalStore, names: list[str]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Upload one read set per name, all at once, the later names started first; what the client saw, and the
    faults the store injected per (operation, name, source, part number)."""
    parts = [(s, n) for s in ("SOURCE1", "SOURCE2") for n in range(1, 6)]
    async with aiohttp.ClientSession() as session:
        client = Client(session, store)
        results = await asyncio.gather(*(client.upload(name, parts) for name in reversed(names)))
    seen = dict(zip(reversed(names), results, strict=True))
    names_of = {upload_id: name for name, (upload_id, _, _) in seen.items()}
    faults: dict[str, list[Any]] = {}
    for record in store.requests:
        where = (record["operation"], names_of.get(record["upload_id"]), record["source"], record["part_number"])
        faults.setdefault(repr(where), []).append(record["fault"])
    return seen, faults


async def test_same_seed_same_ids_checksums_and_faults(make_store: MakeStore) -> None:
    rates: dict[str, Any] = {"throttle_rate": 0.3, "error_rate": 0.15, "reset_rate": 0.05}
    runs = []
    for seed, names in ((42, ["a", "b", "c"]), (42, ["c", "a", "b"]), (43, ["a", "b", "c"])):
        store = await make_store(faults=FaultOptions(seed=seed, **rates))
        runs.append(await run_script(store, names))
    (seen, faults), (seen_again, faults_again), (other_seen, other_faults) = runs
    assert seen == seen_again and faults == faults_again  # whatever the order the uploads were started in
    injected = [f for per_request in faults.values() for f in per_request]
    assert {"throttle", "error500", "error503", None} <= set(injected), "the script met too few faults to show much"
    upload_ids = {upload_id for upload_id, _, _ in seen.values()}
    other_ids = {upload_id for upload_id, _, _ in other_seen.values()}
    assert not upload_ids & other_ids and faults != other_faults  # another seed, other ids and faults
    assert {r for _, _, r in seen.values()}.isdisjoint(r for _, _, r in other_seen.values())


async def test_without_a_seed_ids_differ_from_run_to_run(make_store: MakeStore) -> None:
    seen = [(await run_script(await make_store(), ["a"]))[0]["a"] for _ in range(2)]
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1] and seen[0][2] != seen[1][2]


async def test_faults_only_into_the_operations_named(make_store: MakeStore) -> None:
    store = await make_store(faults=FaultOptions(throttle_rate=1.0, operations=frozenset({"UploadReadSetPart"})))
    async with aiohttp.ClientSession() as session:
        client = Client(session, store)
        create = json.dumps(FIELDS).encode()
        upload_id = (await client.call("POST", "/upload", create))["uploadId"]
        with pytest.raises(AssertionError, match="never succeeded"):
            await client.call("PUT", f"/upload/{upload_id}/part?partSource=SOURCE1&partNumber=1", b"@" * 100)
    assert [(r["operation"], r["fault"]) for r in store.requests[:2]] == [
        ("CreateMultipartReadSetUpload", None),
        ("UploadReadSetPart", "throttle"),
    ]


def test_serve_with_a_seed_hands_out_the_same_ids_every_run(tmp_path: Path) -> None:
    def one_run(name: str, *flags: str) -> tuple[str, str, str]:
        with serve(tmp_path / name, *flags) as served:
            client = boto3.client(
                "omics",
                region_name="us-east-1",
                endpoint_url=served.url,
                aws_access_key_id="test",
                aws_secret_access_key="test",
                config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
            )
            upload_id = create(client, clientToken=uuid.uuid4().hex)
            part = put(client, upload_id, "SOURCE1", 1, b"@r\nACGT\n+\nIIII\n")
            done = client.complete_multipart_read_set_upload(
                sequenceStoreId=STORE_ID,
                uploadId=upload_id,
                parts=[part],  # type: ignore[list-item]
            )
            return upload_id, part["checksum"], done["readSetId"]

    first, again, other, unseeded = (
        one_run("a", "--seed", "5"),
        one_run("b", "--seed", "5"),
        one_run("c", "--seed", "6"),
        one_run("d"),
    )
    assert first == again
    assert all(x != y for x, y in zip(first, other, strict=True))
    assert all(x != y for x, y in zip(first, unseeded, strict=True))


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
