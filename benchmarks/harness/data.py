"""Test data, generated once and reused: random-looking bytes written fast, or sparse files for the big sizes.

Every file starts with a gzip member of real FASTQ records (about 300 KiB), so the uploaders' check of a source's
first bytes against its file type passes; the rest is random-looking bytes (or a sparse hole) that the store in
--discard mode neither keeps nor checks, incompressible enough that nothing along the way gets a free ride. The
verification scenario has real FASTQ.gz of its own (``ensure_fastq_gz``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

MIB = 1024**2
_BLOCKS = 17  # a prime number of distinct 1 MiB blocks, cycled
_BASES = bytes(b"ACGT"[n % 4] for n in range(256))
_QUALITIES = bytes(b"#+5?@AFI"[n % 8] for n in range(256))
VERSION = 2  # in the file names: version 1 files had no FASTQ head


def fastq_member(records: int, seed: int, level: int = 1) -> bytes:
    """One gzip member of ``records`` random 150 bp reads with Illumina-style names."""
    rng = random.Random(seed)
    lines = []
    for number in range(records):
        bases = rng.randbytes(150).translate(_BASES)
        quality = rng.randbytes(150).translate(_QUALITIES)
        lines.append(b"@A00123:8:H2CYDDSX2:1:1101:%d:%d 1:N:0:ACGT\n%s\n+\n%s\n" % (seed, number, bases, quality))
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(b"".join(lines)) + compressor.flush()


def _write_random_ish(path: Path, size: int, salt: int) -> None:
    blocks = [os.urandom(MIB) for _ in range(_BLOCKS)]
    head = fastq_member(2000, salt)[:size]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as out:
        out.write(head)
        written = len(head)
        index = salt
        while written < size:
            block = blocks[index % _BLOCKS]
            chunk = block[: min(MIB, size - written)]
            out.write(chunk)
            written += len(chunk)
            index += 1
    tmp.replace(path)


def _write_sparse(path: Path, size: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as out:
        out.write(fastq_member(2000, 0)[:size])
        out.truncate(size)
    tmp.replace(path)


def ensure_file(data_dir: Path, name: str, size: int, *, sparse: bool = False, salt: int = 0) -> Path:
    """Return ``data_dir/name`` of exactly ``size`` bytes, creating it when missing or of another size."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    if path.exists() and path.stat().st_size == size:
        return path
    if not sparse:
        free = shutil.disk_usage(data_dir).free
        if free < size + 1024 * MIB:
            raise OSError(f"not enough disk space under {data_dir} for {size / MIB:.0f} MiB of test data")
        _write_random_ish(path, size, salt)
    else:
        _write_sparse(path, size)
    return path


def ensure_pair(data_dir: Path, size: int, *, sparse: bool = False) -> tuple[Path, Path]:
    """Two sources of ``size`` bytes each (a paired FASTQ stand-in), distinct in content."""
    kind = "sparse" if sparse else "data"
    first = ensure_file(data_dir, f"{kind}-v{VERSION}-{size}-R1.fq.gz", size, sparse=sparse, salt=0)
    second = ensure_file(data_dir, f"{kind}-v{VERSION}-{size}-R2.fq.gz", size, sparse=sparse, salt=7)
    return first, second


def ensure_fastq_gz(data_dir: Path, size: int, mate: int) -> Path:
    """A real FASTQ.gz of about ``size`` bytes (members of 20,000 reads, gzip level 1), made once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"fastq-v{VERSION}-{size}-R{mate}.fq.gz"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        written, seed = 0, mate * 1_000_003
        while written < size:
            member = fastq_member(20_000, seed)
            out.write(member)
            written += len(member)
            seed += 1
    tmp.replace(path)
    return path


def describe(size: int) -> str:
    """1073741824 → '1 GiB', 4194304 → '4 MiB', 40960000 → '39.1 MiB'."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


DATA_DIR = Path(__file__).resolve().parent.parent / ".data"


def pair_parser(doc: str, runs: int) -> argparse.ArgumentParser:
    """The parser of a script that sends a pair of files in alternated runs: ``--gib``, ``--runs``, ``--data-dir``
    (add its own options, then ``parse_pair_args``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per source (default 1)")
    parser.add_argument("--runs", type=int, default=runs, help=f"alternated runs of each client (default {runs})")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    return parser


def parse_pair_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.runs < 1 or args.gib <= 0:
        parser.error("--runs must be at least 1 and --gib positive")
    return args
