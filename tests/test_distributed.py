"""Batches on a Dask LocalCluster of two worker processes, against the local store with its quotas on.

The store enforces quotas scaled up five times from the service's defaults (control 5/s, parts 50/s, listings
25/s) so twenty read sets need seconds, not the 40 s that two control requests each at 1/s would take; the shared
budget is configured from the same numbers, and the store's log is checked against them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from async_uploader.fleet.dask_budget import install_rate_budget

pytest.importorskip("distributed")

from distributed import Client, LocalCluster

from async_uploader import RateLimits, RetryConfig, ServiceConfig, UploadConfig, Uploader
from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.core.manifest import ManifestRow, RowOutcome, parse_manifest
from async_uploader.core.ratelimit import RequestKind
from async_uploader.edge.batchstate import BatchState
from async_uploader.edge.journal import load_checkpoint
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.fleet.budget import SharedBudget, budget_rates
from async_uploader.fleet.dask_batch import run_batch_on_dask
from async_uploader.fleet.dask_budget import DaskSchedulerLimiter
from async_uploader.fleet.lease import FileLease, LeaseLostError, hold_lease
from tests.helpers import fastq_gz

STORE_ID = "1234567890"
KIB = 1024
SERVICE_QUOTAS = StoreOptions.service_quotas()
# The other tests run five times faster than the service allows, to stay short; the twenty-read-set test does not.
QUOTAS = {kind: rate * 5.0 for kind, rate in SERVICE_QUOTAS.items()}
KIND = {
    "CreateMultipartReadSetUpload": "control",
    "CompleteMultipartReadSetUpload": "control",
    "AbortMultipartReadSetUpload": "control",
    "UploadReadSetPart": "parts",
    "ListReadSetUploadParts": "listings",
    "ListMultipartReadSetUploads": "listings",
    "GetReadSetMetadata": "listings",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.usefixtures("test_credentials")]


def make_rows(folder: Path, count: int) -> list[ManifestRow]:
    """``count`` paired read sets of 4-6 KiB per source: 2-3 parts of 2 KiB each."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["source1,source2,sourceFileType,subjectId,sampleId,name"]
    for i in range(count):
        for mate in (1, 2):
            size = 4 * KIB + (i * 977 + mate * 311) % (2 * KIB)
            # The store checks the gzip magic; the rest is incompressible noise of the wanted size.
            (folder / f"rs{i}_{mate}.fq.gz").write_bytes(fastq_gz(size, seed=10 * i + mate))
        lines.append(f"rs{i}_1.fq.gz,rs{i}_2.fq.gz,FASTQ,subject-{i},sample-{i},read-set-{i}")
    return parse_manifest("\n".join(lines) + "\n", base_dir=folder, name="manifest.csv")


def upload_config(quotas: dict[str, float] = QUOTAS) -> UploadConfig:
    rates = RateLimits(parts=quotas["parts"], control=quotas["control"], listings=quotas["listings"])
    return UploadConfig(
        part_size=2 * KIB, max_concurrency=4, rates=rates, retry=RetryConfig(base_delay=0.05, max_delay=1.0)
    )


def service_for(store: LocalStore) -> ServiceConfig:
    return ServiceConfig(endpoint_url=store.url, region="us-east-1", connect_timeout=5, read_timeout=30)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[LocalCluster, Client]]:
    async with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            asynchronous=True,
        ) as local,
        Client(local, asynchronous=True) as client,  # type: ignore[no-untyped-call]
    ):
        yield local, client


def starts(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Arrival time of every request per quota kind (the log stamps the end; subtract the duration)."""
    times: dict[str, list[float]] = defaultdict(list)
    for record in records:
        kind = KIND.get(str(record["operation"]))
        if kind is not None:
            times[kind].append(float(record["time"]) - float(record["duration_ms"]) / 1000.0)
    return {kind: sorted(values) for kind, values in times.items()}


def busiest_second(times: list[float]) -> int:
    """The most requests starting within any one-second sliding window."""
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


async def assert_round_trip(store: LocalStore, outcomes: list[RowOutcome]) -> None:
    async with Uploader(service=service_for(store), config=UploadConfig(rates=RateLimits.unlimited())) as up:
        for outcome in outcomes:
            assert outcome.status == "done", outcome
            assert outcome.read_set_id is not None
            for source, path in outcome.row.read_set.sources.items():
                assert isinstance(path, Path)
                parts = int(outcome.result["parts"][source.value])
                chunks = [
                    await up.client.download_part(STORE_ID, outcome.read_set_id, source, n) for n in range(1, parts + 1)
                ]
                assert b"".join(chunks) == path.read_bytes(), (outcome.row.read_set.name, source)


async def test_twenty_read_sets_share_one_budget(tmp_path: Path, cluster: tuple[LocalCluster, Client]) -> None:
    _, client = cluster
    rows = make_rows(tmp_path / "reads", 20)
    log_path = tmp_path / "requests.jsonl"
    options = StoreOptions(data_dir=tmp_path / "store", quotas=SERVICE_QUOTAS, log_path=log_path)
    results: list[RowOutcome] = []
    async with LocalStore(options) as store:
        progress: list[dict[str, object]] = []
        summary = await run_batch_on_dask(
            rows,
            address=client,
            store_id=STORE_ID,
            service=service_for(store),
            config=upload_config(SERVICE_QUOTAS),
            checkpoint_dir=tmp_path / "batch",
            on_result=results.append,
            on_progress=progress.append,
        )
        assert summary.count("done") == 20, [o.as_json() for o in summary.outcomes if o.status != "done"]
        assert len(results) == 20
        # The workers' state changes reach the submitting process, for every row (events travel through the
        # scheduler, so the last may land just after the task's result).
        wanted = {row.row for row in rows}
        deadline = asyncio.get_running_loop().time() + 10
        while {e["row"] for e in progress if e.get("state") == "done"} != wanted:
            assert asyncio.get_running_loop().time() < deadline, "progress events did not all arrive"
            await asyncio.sleep(0.1)
        # One schema for the events of every upload, whether from this process or from a Dask worker.
        assert any(event["event"] == "progress" for event in progress)
        for event in progress:
            jsonschema.validate(event, EVENT_SCHEMA)
        await assert_round_trip(store, results)
        records = list(store.requests)
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(logged) >= len([r for r in records if r["operation"] != "GetReadSet"])
    # The budget spaces requests as they leave the workers; the store sees them arrive. On a loaded machine the
    # delivery can bunch two of them into one second, and the store throttles one (the client then retries it): the
    # requests the store took obey every quota, and the throttles stay a few out of the 40 control requests.
    throttled = [r for r in records if r["error_code"] == "ThrottlingException"]
    assert len(throttled) <= 4, throttled
    taken = [r for r in records if r["error_code"] != "ThrottlingException"]
    ops = Counter(str(r["operation"]) for r in taken)
    assert ops["CreateMultipartReadSetUpload"] == 20
    assert ops["CompleteMultipartReadSetUpload"] == 20
    uploading = [r for r in taken if r["operation"] != "GetReadSet"]
    for kind, times in starts(uploading).items():
        assert busiest_second(times) <= SERVICE_QUOTAS[kind], (kind, busiest_second(times))
    # The done-rows record makes a rerun skip every row without touching the cluster.
    assert len(BatchState(tmp_path / "batch").done) == 20
    again: list[RowOutcome] = []
    summary = await run_batch_on_dask(
        rows,
        address="tcp://127.0.0.1:1",  # never contacted: nothing is left to do
        store_id=STORE_ID,
        service=ServiceConfig(endpoint_url="http://127.0.0.1:1"),
        config=upload_config(),
        checkpoint_dir=tmp_path / "batch",
        on_result=again.append,
    )
    assert summary.count("skipped") == 20 and {o.read_set_id for o in again} == {o.read_set_id for o in results}


async def test_killed_worker_resumes_without_a_second_create(
    tmp_path: Path, cluster: tuple[LocalCluster, Client]
) -> None:
    _, client = cluster
    rows = make_rows(tmp_path / "reads", 4)
    options = StoreOptions(data_dir=tmp_path / "store", quotas=QUOTAS, latency_ms=150)
    batch_dir = tmp_path / "batch"
    killed: list[int] = []
    async with LocalStore(options) as store:

        async def kill_a_worker_mid_upload() -> None:
            """Once a read set has parts on the store and in its checkpoint, kill the worker holding its lease."""
            folder = batch_dir / "checkpoints"
            while not killed:
                await asyncio.sleep(0.05)
                with_parts = {str(r["upload_id"]) for r in store.requests if r["operation"] == "UploadReadSetPart"}
                for lease_path in folder.glob("*.lease") if folder.exists() else []:
                    lease = FileLease(lease_path).current()
                    checkpoint_path = lease_path.with_suffix(".jsonl")
                    if lease is None or not checkpoint_path.exists():
                        continue
                    checkpoint = load_checkpoint(checkpoint_path)
                    upload_id, done = checkpoint.upload_id, checkpoint.read_set_id
                    # a part the checkpoint holds (not only one the store saw): the retry must resume it
                    if upload_id in with_parts and done is None and checkpoint.parts:
                        pid = int(lease.holder.rpartition(":")[2])
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return

        killer = asyncio.create_task(kill_a_worker_mid_upload())
        results: list[RowOutcome] = []
        summary = await run_batch_on_dask(
            rows,
            address=client,
            store_id=STORE_ID,
            service=service_for(store),
            config=upload_config(),
            checkpoint_dir=batch_dir,
            on_result=results.append,
            lease_ttl=30.0,
        )
        killer.cancel()
        assert killed, "no worker was killed: the uploads finished too fast"
        assert summary.count("done") == 4, [o.as_json() for o in summary.outcomes]
        await assert_round_trip(store, results)
        records = list(store.requests)
    ops = Counter(str(r["operation"]) for r in records)
    assert ops["CreateMultipartReadSetUpload"] == 4
    assert ops["CompleteMultipartReadSetUpload"] == 4
    assert ops["ListReadSetUploadParts"] >= 1  # the retried task resumed from the checkpoint
    assert len({o.read_set_id for o in results}) == 4
    assert sum(1 for o in results if o.result.get("resumedParts")) >= 1


async def test_local_address_starts_its_own_cluster(tmp_path: Path) -> None:
    rows = make_rows(tmp_path / "reads", 2)
    results: list[RowOutcome] = []
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", quotas=QUOTAS)) as store:
        summary = await run_batch_on_dask(
            rows,
            address="local:1",
            store_id=STORE_ID,
            service=service_for(store),
            config=upload_config(),
            checkpoint_dir=tmp_path / "batch",
            on_result=results.append,
        )
        assert summary.count("done") == 2
        await assert_round_trip(store, results)


async def test_scheduler_budget_is_shared_and_cut_by_throttles(cluster: tuple[LocalCluster, Client]) -> None:
    _, client = cluster

    rates = budget_rates(RateLimits(parts=100.0, control=1.0, listings=None), margin=0.9)
    assert rates == pytest.approx({"parts": 90.0, "control": 0.9})
    await install_rate_budget(client, "test-budget", rates)
    first = DaskSchedulerLimiter("test-budget", rates, scheduler=client.scheduler)
    second = DaskSchedulerLimiter("test-budget", rates, scheduler=client.scheduler)
    # Concurrent acquires of one limiter share one round trip.
    await asyncio.gather(*(first.acquire(RequestKind.LISTING) for _ in range(3)))
    assert first.round_trips == 0  # listings are unlimited here: no trip at all
    delays = await first._reserve_many("control", 1)
    delays += await second._reserve_many("control", 1)
    assert delays[0] == 0.0 and delays[1] == pytest.approx(1 / 0.9, abs=0.05)
    first.on_throttle(RequestKind.PART)
    await asyncio.sleep(0.2)
    state = await second.state()
    assert state["parts"]["rate"] < 90.0 and state["parts"]["throttles"] == 1
    assert second.current_rate(RequestKind.PART) == 90.0  # learnt on its next reservation
    await second._reserve_many("parts", 1)
    assert second.current_rate(RequestKind.PART) == pytest.approx(state["parts"]["rate"])
    with pytest.raises(RuntimeError, match="acquire"):
        first.reserve(RequestKind.CONTROL)


def test_shared_budget_spaces_every_reservation() -> None:
    now = [100.0]
    budget = SharedBudget({"parts": 10.0}, clock=lambda: now[0])
    delays, rate = budget.reserve("parts", 5)
    assert rate == 10.0 and delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert budget.reserve("unknown", 2) == ([0.0, 0.0], None)
    assert budget.throttle("parts") == pytest.approx(7.0)
    now[0] += 30.0
    _, recovered = budget.reserve("parts", 1, successes=3)
    assert recovered == pytest.approx(10.0)


def test_file_lease_excludes_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "rs.lease"
    first = FileLease(path, ttl=30.0, holder="other-host:1")
    second = FileLease(path, ttl=30.0)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.renew()
    # An expired lease is taken over; its old holder finds out when it renews.
    path.write_text(json.dumps({"holder": "other-host:1", "token": first.token, "expires": 0}))
    assert second.try_acquire()
    with pytest.raises(LeaseLostError):
        first.renew()
    first.release()  # not ours any more: left alone
    assert path.exists()
    second.release()
    assert not path.exists()


def test_file_lease_of_a_dead_local_process_is_taken_at_once(tmp_path: Path) -> None:

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = FileLease(tmp_path / "rs.lease", ttl=600.0, holder=f"{socket.gethostname()}:{int(child.stdout)}")
    assert dead.try_acquire()
    assert FileLease(tmp_path / "rs.lease", ttl=600.0).try_acquire()


async def test_hold_lease_stops_the_body_when_the_lease_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "rs.lease"
    with pytest.raises(LeaseLostError):
        async with hold_lease(path, ttl=0.3) as lease:
            path.write_text(json.dumps({"holder": "thief:1", "token": "x", "expires": 1e12}))
            assert lease.holder
            await asyncio.sleep(5)
    assert path.exists()  # the thief's lease is not released by the loser
