"""What a checkpoint costs: µs per record_parts() call (fsync included) and the time to load 20,000 parts.

Run: .venv/bin/python benchmarks/checkpoint_cost.py [--dir DIR] [--calls N]
DIR should be on the disk that will hold real checkpoints (default: ~/.cache/async-uploader/bench).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from async_uploader.core.checkpoint import CheckpointHeader, PartRecord, SourceFingerprint
from async_uploader.core.config import FileType, Source
from async_uploader.core.plan import make_plan
from async_uploader.edge.journal import Journal, load_checkpoint


def header() -> CheckpointHeader:
    sources = tuple(SourceFingerprint(s, f"/data/{s.value}.fastq.gz", 10**12, 1, "0123456789abcdef") for s in Source)
    return CheckpointHeader(
        store_id="1234567890",
        file_type=FileType.FASTQ,
        subject_id="subject",
        sample_id="sample",
        name="bench",
        part_size=100 * 1024 * 1024,
        sources=sources,
        client_token="token",
    )


def record(source: Source, number: int) -> PartRecord:
    # A store checksum and an xxh3 digest of realistic length.
    return PartRecord(source, number, 104_857_600, f"{number:064x}", f"{number:016x}")


def per_call(directory: Path, calls: int, batch: int) -> list[float]:
    """Seconds for each record_parts() call of ``batch`` records."""
    times = []
    journal = Journal.create(directory / f"batch{batch}.jsonl", header())
    journal.record_upload("0123456789")
    number = 0
    for _ in range(calls):
        rows = []
        for _ in range(batch):
            number += 1
            rows.append(record(Source.SOURCE1 if number % 2 else Source.SOURCE2, (number + 1) // 2))
        start = time.perf_counter()
        journal.record_parts(rows)
        times.append(time.perf_counter() - start)
    journal.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "async-uploader" / "bench")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        for batch in (1, 16):
            times = per_call(directory, args.calls, batch)
            median = statistics.median(times) * 1e6
            p95 = sorted(times)[int(len(times) * 0.95)] * 1e6
            print(
                f"record_parts, batch {batch:>2}: median {median:8.1f} µs/call  p95 {p95:8.1f} µs/call  "
                f"({median / batch:7.1f} µs/part)  over {args.calls} calls"
            )

        path = directory / "20000.jsonl"
        journal = Journal.create(path, header())
        journal.record_upload("0123456789")
        for first in range(1, 10_001, 16):
            numbers = range(first, min(first + 16, 10_001))
            journal.record_parts([record(s, n) for n in numbers for s in Source])
        journal.close()
        size = path.stat().st_size
        loads = []
        for _ in range(5):
            start = time.perf_counter()
            loaded = load_checkpoint(path)
            loads.append(time.perf_counter() - start)
        assert len(loaded.parts) == 20_000
        print(f"load 20,000-part checkpoint ({size / 1e6:.2f} MB): median {statistics.median(loads) * 1e3:.1f} ms")

        # Resume planning when 90% is done: load, then list the missing parts.
        plan = make_plan({s: 10_000 * 104_857_600 for s in Source}, 104_857_600)
        done = dict(list(loaded.parts.items())[:18_000])
        start = time.perf_counter()
        missing = sum(1 for _ in plan.parts(done=done))
        print(f"missing parts of a 90%-done plan: {missing} found in {(time.perf_counter() - start) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
