"""What end-to-end verification costs: hashing a FASTQ.gz the way the service computes its ETag, and counting reads.

Run: .venv/bin/python benchmarks/verify_cost.py [--mib 512] [--level 6]

Writes a gzip FASTQ of about ``--mib`` MiB (random 150 bp reads, gzip level ``--level``: bcl2fastq and most
pipelines write level 6 or BGZF) under benchmarks/.data, page-caches it, then times ``core.fastq.FastqSummer`` over
it with each inflater (zlib, python-isal) and each family's hash (MD5 for FASTQ_MD5up, SHA-256, SHA-512), and the
pieces alone: inflating, hashing the uncompressed text, counting. Figures are MB/s of compressed input and CPU
seconds per GiB of compressed input, medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from async_uploader.core.fastq import FastqSummer

HERE = Path(__file__).resolve().parent
GIB = 1024**3
_BASES = bytes(b"ACGT"[n % 4] for n in range(256))
_QUALITIES = bytes(b"#+5?@AFI"[n % 8] for n in range(256))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write(path: Path, mib: int, level: int) -> None:
    """Random 150 bp reads with Illumina-style names, gzip-compressed at ``level`` in 16 MiB members."""
    rng = random.Random(0)
    target = mib * 1024 * 1024
    with path.open("wb") as out:
        written, number = 0, 0
        while written < target:
            records = []
            for _ in range(50_000):
                number += 1
                bases = rng.randbytes(150).translate(_BASES)
                quality = rng.randbytes(150).translate(_QUALITIES)
                records.append(b"@A00123:8:H2CYDDSX2:1:1101:%d:1000 1:N:0:ACGT\n%s\n+\n%s\n" % (number, bases, quality))
            compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
            member = compressor.compress(b"".join(records)) + compressor.flush()
            out.write(member)
            written += len(member)


def timed(run: Callable[[], object], runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        started, before = time.perf_counter(), cpu()
        run()
        walls.append(time.perf_counter() - started)
        cpus.append(cpu() - before)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = HERE / ".data"
    folder.mkdir(exist_ok=True)
    path = folder / f"verify-{args.mib}MiB-l{args.level}.fastq.gz"
    if not path.exists():
        write(path, args.mib, args.level)
    data = path.read_bytes()
    size = len(data)
    summer = FastqSummer()
    summer.update(data)
    summary = summer.finish()
    ratio = summary.bases * 2 / size  # about the uncompressed size over the compressed (bases and qualities)
    print(f"{path.name}: {size / 1e6:.0f} MB compressed, {summary.reads:,} reads, ~{ratio:.1f}x compression")

    def report(label: str, wall: float, used: float) -> None:
        print(f"  {label:42s} {size / wall / 1e6:7.0f} MB/s compressed   CPU {used / (size / GIB):5.2f} s/GiB")

    for inflater in ("zlib", "isal"):
        for family in ("MD5up", "SHA256up", "SHA512up"):

            def whole(inflater: str = inflater, family: str = family) -> object:
                summer = FastqSummer(family, inflater=inflater)
                for start in range(0, size, 8 * 1024 * 1024):
                    summer.update(data[start : start + 8 * 1024 * 1024])
                return summer.finish()

            report(f"{inflater} + {family} + counting", *timed(whole, args.runs))
    inflated = b"".join(_inflate(data))
    for name in ("md5", "sha256", "sha512"):
        report(
            f"hash {name} alone (of the text)",
            *timed(lambda name=name: hashlib.new(name, inflated).digest(), args.runs),
        )


def _inflate(data: bytes) -> list[bytes]:
    out = []
    while data:
        member = zlib.decompressobj(31)
        out.append(member.decompress(data))
        data = member.unused_data
    return out


if __name__ == "__main__":
    main()
