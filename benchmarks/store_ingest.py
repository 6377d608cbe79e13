"""The local store's processing of a read set after Complete against the client's verifier on the same read set.

Run: .venv/bin/python benchmarks/store_ingest.py [--mb 300] [--runs 3] [--baseline /path/to/other/checkout]

Writes a pair of FASTQ.gz of ``--mb`` MB in all under benchmarks/.data for each data set (``demo``: the generator of
``make demo``; ``four-bin``: binned qualities, gzip -6, from verify_pipeline.py), cuts each source into 16 MiB part
files as the store keeps them, and times ``emulator.ingest.ingest`` (join, hash, count: what happens while the read
set is PROCESSING_UPLOAD) and the client's verifier (``engine.hashing.summarize_path`` over both sources at once,
as an upload runs it), medians of ``--runs``. ``--baseline`` also times the store of another checkout.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from verify_pipeline import write_four_bin

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.emulator.ingest import Job, ingest
from async_uploader.engine.hashing import summarize_path

HERE = Path(__file__).resolve().parent
PART = 16 * 1024 * 1024


def cut(source: Path, folder: Path) -> list[Path]:
    parts = []
    with source.open("rb") as f:
        while chunk := f.read(PART):
            parts.append(folder / f"{source.name}.{len(parts) + 1}")
            parts[-1].write_bytes(chunk)
    return parts


def store_run(pair: list[Path], ingest_of: Callable[[Any], Any], job_of: Any) -> float:
    with tempfile.TemporaryDirectory(dir=HERE / ".data") as scratch:
        folder = Path(scratch)
        (folder / "set").mkdir()
        job = job_of("FASTQ", {f"SOURCE{n}": cut(s, folder) for n, s in enumerate(pair, 1)}, folder / "set")
        os.sync()
        started = time.perf_counter()
        outcome = ingest_of(job)
        took = time.perf_counter() - started
        assert outcome.etag is not None and outcome.problem is None, outcome
        return took


def client_run(pair: list[Path]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(len(pair)) as pool:
        list(pool.map(lambda path: summarize_path(path, "MD5up"), pair))
    return time.perf_counter() - started


def baseline(checkout: Path) -> tuple[Callable[[Any], Any], Any]:
    """The store's ingest of another checkout, loaded under another package name."""
    folder = Path(tempfile.mkdtemp())
    shutil.copytree(checkout / "async_uploader" / "emulator", folder / "baseline_store")
    sys.path.insert(0, str(folder))
    module = importlib.import_module("baseline_store.ingest")
    return module.ingest, module.Job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="the read set's compressed size, both sources")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout whose store to time too")
    args = parser.parse_args()
    folder = HERE / ".data"
    folder.mkdir(exist_ok=True)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    other = baseline(args.baseline) if args.baseline else None
    for name, writer in (("demo", write_fastq_gz), ("four-bin", write_four_bin)):
        pair = [folder / f"ingest-{name}-{args.mb}MB-R{n}.fastq.gz" for n in (1, 2)]
        for path in pair:
            if not path.exists():
                writer(path, args.mb * 1_000_000 // 2)
        client = statistics.median(client_run(pair) for _ in range(args.runs))
        store = statistics.median(store_run(pair, ingest, Job) for _ in range(args.runs))
        line = f"{name}: {sum(p.stat().st_size for p in pair) / 1e6:.0f} MB pair: client verifier {client:.2f} s, "
        line += f"store {store:.2f} s ({store / client:.2f}x the client)"
        if other is not None:
            before = statistics.median(store_run(pair, *other) for _ in range(args.runs))
            line += f", baseline store {before:.2f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
