"""What resuming a big upload costs: a 2 x 10,000-part upload stopped at 90%, then resumed.

    .venv/bin/python benchmarks/resume_cost.py [--parts 10000] [--part-size 4096]

Runs the local store in its own process (keeping no bytes), uploads a paired read set in tiny parts with a
checkpoint, stops it gracefully once 90% of the parts are acknowledged, and times the resume: loading the checkpoint,
listing the store's parts (every page, both sources), and sending the rest. Prints one line per phase.
The listing is timed without a rate limit; against the service its 5 requests/s quota adds pages / 5 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from async_uploader import FileType, RateLimits, ReadSet, ServiceConfig, UploadConfig, Uploader, UploadInterruptedError
from async_uploader.edge.journal import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.data import fastq_member

STORE_ID = "1234567890"


async def run(url: str, folder: Path, parts: int, part_size: int) -> None:
    sources = []
    for name in ("r1.fq.gz", "r2.fq.gz"):
        path = folder / name
        head = fastq_member(2000, seed=len(sources))[: parts * part_size]
        path.write_bytes(head + os.urandom(parts * part_size - len(head)))
        sources.append(path)
    read_set = ReadSet(sources[0], FileType.FASTQ, "subject", "sample", "resume-cost", source2=sources[1])
    checkpoint = folder / "upload.ckpt"
    config = UploadConfig(part_size=part_size, rates=RateLimits.unlimited(), max_concurrency=32, verify=False)
    service = ServiceConfig(endpoint_url=url, region="us-east-1")
    async with Uploader(config, service=service) as uploader:
        handle = uploader.start(read_set, store_id=STORE_ID, checkpoint=checkpoint)
        target = int(2 * parts * 0.9)
        while sum(handle.statistics().parts_done.values()) < target:
            await asyncio.sleep(0.01)
        handle.stop(grace=10.0)
        with contextlib.suppress(UploadInterruptedError):
            await handle
        done = sum(handle.statistics().parts_done.values())
    started = time.perf_counter()
    loaded = load_checkpoint(checkpoint)
    load_seconds = time.perf_counter() - started
    recorded = len(loaded.parts)
    print(f"stopped at {done} of {2 * parts} parts acknowledged; checkpoint holds {recorded} parts")
    print(f"load checkpoint: {load_seconds * 1000:.0f} ms ({checkpoint.stat().st_size / 1e6:.1f} MB)")
    async with Uploader(config, service=service) as uploader:
        phases: dict[str, float] = {}
        begun = time.perf_counter()

        def watch(event: dict[str, object]) -> None:
            if event.get("event") == "state":
                phases[str(event["state"])] = time.perf_counter() - begun

        result = await uploader.upload(read_set, store_id=STORE_ID, checkpoint=checkpoint, on_event=watch)
        total = time.perf_counter() - begun
    reconcile = phases.get("uploading", 0.0)
    pages = -(-result.resumed_parts // 100)
    print(f"resume to first new part (load, fingerprint, list {pages} pages): {reconcile:.2f} s")
    sent = 2 * parts - result.resumed_parts
    print(f"resume to Complete: {total:.2f} s; {result.resumed_parts} parts kept, {sent} sent")
    print(f"against the service's listing quota (5/s) the {pages} pages add at least {pages / 5:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=10_000, help="parts per source")
    parser.add_argument("--part-size", type=int, default=4096)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    command = [sys.executable, "-m", "async_uploader.emulator", "--discard", "--port", "0"]
    store = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert store.stdout is not None
        url = store.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(run(url, Path(folder), args.parts, args.part_size))
    finally:
        store.terminate()
        store.wait(10)


if __name__ == "__main__":
    main()
