"""What checking a resumed upload costs: the identity check of a source, and reading its parts again.

Run: .venv/bin/python benchmarks/resume_check.py [--gib 2] [--dir DIR]

A resume trusts recorded parts while the source is provably the same file (path, size, times, inode, device and a
192 KiB content sample: the identity check); otherwise it reads every recorded part again and compares its xxh3
digest with the one recorded when it was sent. This measures both on DIR's disk: the identity check, and the
re-read of the whole file with the page cache warm and with the file's pages dropped first (POSIX_FADV_DONTNEED,
as a file written long ago would be), in seconds and CPU seconds per GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from async_uploader.core.checkpoint import PartRecord
from async_uploader.core.config import Source
from async_uploader.edge.sources import fingerprint_source, part_digest
from async_uploader.engine.verify import changed_parts

GIB = 1024**3
PART = 100 * 1024 * 1024


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write(path: Path, size: int) -> None:
    block = os.urandom(8 * 1024 * 1024)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        os.fsync(out.fileno())


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def reread(path: Path, records: list[PartRecord]) -> tuple[float, float]:
    started, before = time.perf_counter(), cpu()
    changed = await changed_parts({Source.SOURCE1: path}, PART, records)
    assert not changed
    return time.perf_counter() - started, cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / ".data")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    size = int(args.gib * GIB) // PART * PART
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        path = Path(name) / "source.bin"
        write(path, size)
        records = [
            PartRecord(Source.SOURCE1, n + 1, PART, "c", part_digest(path, n * PART, PART) or "")
            for n in range(size // PART)
        ]
        identity = []
        for _ in range(20):
            started = time.perf_counter()
            fingerprint_source(Source.SOURCE1, path)
            identity.append(time.perf_counter() - started)
        print(
            f"identity check (stat + 3 × 64 KiB sample): median {statistics.median(identity) * 1e3:.2f} ms per source"
        )
        gib = size / GIB
        for label, cold in (("page-cached", False), ("cold (pages dropped)", True)):
            walls, cpus = [], []
            for _ in range(args.runs):
                if cold:
                    drop_cache(path)
                wall, used = anyio.run(reread, path, records)
                walls.append(wall / gib)
                cpus.append(used / gib)
            print(
                f"re-read and compare {gib:.1f} GiB, {label}: median {statistics.median(walls):.3f} s/GiB "
                f"({GIB / 1e9 / statistics.median(walls):.2f} GB/s), CPU {statistics.median(cpus):.3f} s/GiB"
                f"  [{', '.join(f'{w:.3f}' for w in walls)}]"
            )


if __name__ == "__main__":
    main()
