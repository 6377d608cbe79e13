"""How fast the page cache is copied into a buffer, by the buffer's offset from a page boundary.

    python benchmarks/page_offset.py [--mib 1024] [--slice-kib 256]

Writes a file of ``--mib`` MiB (reused if present), reads it once to cache it, then reads it again with
``os.preadv`` in slices of ``--slice-kib`` KiB into one reused buffer placed at offsets 0, 16, 32, 48 and 64 bytes
from a page boundary, and into a fresh mmap per slice. malloc puts large blocks 16 bytes past a page boundary;
on some CPUs the kernel's copy into such a buffer is several times slower (the reason part buffers are
page-aligned mmaps, ``edge.sources.aligned_buffer``).
"""

from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def _read(fd: int, size: int, view: memoryview) -> float:
    started = time.perf_counter()
    offset = 0
    while offset < size:
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            break
        offset += got
    return size / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--slice-kib", type=int, default=256)
    args = parser.parse_args()
    size, piece = args.mib * MIB, args.slice_kib * 1024
    path = Path(tempfile.gettempdir()) / f"async-uploader-page-offset-{args.mib}.bin"
    if not path.exists() or path.stat().st_size != size:
        with path.open("wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        page = mmap.PAGESIZE
        arena = mmap.mmap(-1, piece + 2 * page)
        _read(fd, size, memoryview(arena)[:piece])  # caches the file
        for shift in (0, 16, 32, 48, 64):
            rate = _read(fd, size, memoryview(arena)[shift : shift + piece])
            print(f"reused buffer at page offset +{shift:<3d} {rate:6.2f} GB/s")
        started = time.perf_counter()
        offset = 0
        while offset < size:
            fresh = mmap.mmap(-1, piece)
            offset += os.preadv(fd, [fresh], offset)
            fresh.close()
        print(f"a fresh mmap per slice        {size / (time.perf_counter() - started) / 1e9:6.2f} GB/s")
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
