"""Batch throughput on Dask under the service's default quotas, and what a shared budget costs per request.

    .venv/bin/python benchmarks/dask_batch.py [--read-sets 12] [--workers 1 2]

For each worker count: a LocalCluster of that many worker processes uploads ``--read-sets`` small paired read sets
into the local store, which enforces the service's default quotas (1/s Create+Complete+Abort, 10/s parts, 5/s
listings). Prints read sets per minute and the throttles the store answered. Then times ``reserve`` of the two
shared budgets: the file one (``--shared-budget``) and the Dask scheduler one, one caller and 16 at once.
Needs the dask extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from async_uploader.core.config import RateLimits, RetryConfig, ServiceConfig, UploadConfig
from async_uploader.core.manifest import parse_manifest
from async_uploader.core.ratelimit import RequestKind
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.fleet.budget import budget_rates
from async_uploader.fleet.dask_batch import run_batch_on_dask
from async_uploader.fleet.dask_budget import DaskSchedulerLimiter, install_rate_budget
from async_uploader.fleet.filebudget import FileBudgetLimiter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.data import fastq_member

STORE_ID = "1234567890"
KIB = 1024


def manifest(folder: Path, count: int) -> Path:
    lines = ["source1,source2,sourceFileType,subjectId,sampleId,name"]
    for i in range(count):
        for mate in (1, 2):
            (folder / f"rs{i}_{mate}.fq.gz").write_bytes(fastq_member(20, seed=10 * i + mate))
        lines.append(f"rs{i}_1.fq.gz,rs{i}_2.fq.gz,FASTQ,subject-{i},sample-{i},bench-{i}")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


async def batch(workers: int, count: int, folder: Path) -> None:
    path = manifest(folder, count)
    rows = parse_manifest(path.read_text(), base_dir=folder, name=path.name)
    quotas = StoreOptions.service_quotas()
    config = UploadConfig(part_size=2 * KIB, rates=RateLimits(), retry=RetryConfig(base_delay=0.1, max_delay=2.0))
    async with LocalStore(StoreOptions(data_dir=folder / "store", quotas=quotas)) as store:
        service = ServiceConfig(endpoint_url=store.url, region="us-east-1")
        async with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                asynchronous=True,
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            started = time.perf_counter()
            summary = await run_batch_on_dask(
                rows,
                address=client,
                store_id=STORE_ID,
                service=service,
                config=config,
                checkpoint_dir=folder / "batch",
                on_result=lambda outcome: None,
            )
            seconds = time.perf_counter() - started
        throttles = sum(1 for r in store.requests if r["error_code"] == "ThrottlingException")
    done = summary.count("done")
    print(
        f"{workers} worker(s): {done}/{count} read sets in {seconds:.1f} s = {60 * done / seconds:.1f} read sets/min, "
        f"{throttles} throttles (the control quota allows at most 0.9 x 60 / 2 = {0.9 * 60 / 2:.0f}/min)"
    )


async def limiter_costs(folder: Path) -> None:
    rates = RateLimits(parts=1e6, control=1e6, listings=1e6, margin=1.0)
    budget = FileBudgetLimiter(folder / "budget.json", rates)
    count = 2000
    started = time.perf_counter()
    for _ in range(count):
        budget.reserve(RequestKind.PART)
    print(f"file budget: reserve {1e6 * (time.perf_counter() - started) / count:.0f} µs (one caller)")
    started = time.perf_counter()
    for _ in range(count // 4):
        await budget.acquire(RequestKind.PART)
    print(f"file budget: acquire {1e6 * (time.perf_counter() - started) / (count // 4):.0f} µs (one caller)")
    async with (
        LocalCluster(
            n_workers=1, processes=True, host="127.0.0.1", dashboard_address=":0", asynchronous=True
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        shared = budget_rates(rates, 1.0)
        await install_rate_budget(client, "bench", shared)
        limiter = DaskSchedulerLimiter("bench", shared, scheduler=client.scheduler)
        started = time.perf_counter()
        for _ in range(500):
            await limiter.acquire(RequestKind.PART)
        print(f"Dask scheduler budget: acquire {1e6 * (time.perf_counter() - started) / 500:.0f} µs (one caller)")
        started = time.perf_counter()
        for _ in range(100):
            await asyncio.gather(*(limiter.acquire(RequestKind.PART) for _ in range(16)))
        print(f"Dask scheduler budget: acquire {1e6 * (time.perf_counter() - started) / 1600:.0f} µs (16 at once)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--read-sets", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(limiter_costs(Path(folder)))
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(batch(workers, args.read_sets, Path(folder)))


if __name__ == "__main__":
    main()
