"""Test data, generated once and reused: random-looking bytes written fast, or sparse files for the big sizes.

The store in --discard mode does not check the format, so the bytes need not be FASTQ; they only need to be
incompressible enough that nothing along the way gets a free ride.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MIB = 1024**2
_BLOCKS = 17  # a prime number of distinct 1 MiB blocks, cycled


def _write_random_ish(path: Path, size: int, salt: int) -> None:
    blocks = [os.urandom(MIB) for _ in range(_BLOCKS)]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as out:
        written = 0
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
    first = ensure_file(data_dir, f"{kind}-{size}-R1.bin", size, sparse=sparse, salt=0)
    second = ensure_file(data_dir, f"{kind}-{size}-R2.bin", size, sparse=sparse, salt=7)
    return first, second


def describe(size: int) -> str:
    """1073741824 → '1 GiB', 4194304 → '4 MiB', 40960000 → '39.1 MiB'."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"
