"""What gzip-compressing plain FASTQ on the fly costs, and what it saves against ``gzip -1`` then an upload.

Run: .venv/bin/python benchmarks/compress_cost.py [--mib 128] [--runs 3] [--no-upload]

Two data sets of ``--mib`` MiB of plain FASTQ each, written under benchmarks/.data: the demo's reads (qualities
drawn from 40 values, as ``make demo`` writes them, decompressed) and reads whose qualities are binned to four
values (F : , #, as current Illumina instruments write them). For each: MB/s of plain input and the ratio of
1 MiB gzip members (what the uploader sends) from isal's deflate and zlib at several levels, one thread; then
isal level 1 and zlib level 1 on every core, the way the uploader runs them. Then, against a local store on
127.0.0.1 (its own process), the wall time of uploading the plain FASTQ (compressed on the fly, verified) beside
``gzip -1`` followed by the upload of the .gz (verified). Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from isal import isal_zlib

from async_uploader.cli.demo import write_fastq_gz

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
MEMBER = MIB
_BASES = bytes(b"ACGT"[n % 4] for n in range(256))
# four bins, as NovaSeq writes them: mostly F (Q37), some : (Q25), few , (Q11), rare # (Q2)
_BINNED = bytes(b"F" * 216 + b":" * 28 + b"," * 9 + b"#" * 3)


def demo_plain(path: Path, size: int) -> None:
    """The demo's reads (``cli.demo.write_fastq_gz``), decompressed."""
    packed = path.with_suffix(".gz")
    write_fastq_gz(packed, size // 2, mate=1, seed=7)
    with gzip.open(packed, "rb") as source, path.open("wb") as out:
        left = size
        while left > 0 and (chunk := source.read(min(left, 8 * MIB))):
            out.write(chunk)
            left -= len(chunk)
    packed.unlink()
    _cut_to_whole_records(path)


def binned_plain(path: Path, size: int) -> None:
    """Random 151 bp reads with Illumina names and qualities binned to four values."""
    rng = random.Random(4)
    written, number = 0, 0
    with path.open("wb") as out:
        while written < size:
            records = []
            for _ in range(20_000):
                number += 1
                bases = rng.randbytes(151).translate(_BASES)
                quality = rng.randbytes(151).translate(_BINNED)
                records.append(
                    b"@A00123:8:H2CYDDSX2:1:%d:%d:%d 1:N:0:ACGTACGT\n%s\n+\n%s\n"
                    % (1101 + number // 400_000, number % 32_000, 1000 + number % 9000, bases, quality)
                )
            block = b"".join(records)
            out.write(block)
            written += len(block)


def _cut_to_whole_records(path: Path) -> None:
    data = path.read_bytes()
    lines = data.split(b"\n")
    whole = len(lines) - 1 - (len(lines) - 1) % 4
    path.write_bytes(b"\n".join(lines[:whole]) + b"\n")


def members(data: bytes, deflate: Callable[[memoryview], bytes], threads: int) -> int:
    """Compress ``data`` as 1 MiB gzip members on ``threads`` threads; the compressed size."""
    view = memoryview(data)
    pieces = [view[at : at + MEMBER] for at in range(0, len(data), MEMBER)]
    if threads == 1:
        return sum(len(deflate(piece)) for piece in pieces)
    with ThreadPoolExecutor(threads) as pool:
        return sum(len(out) for out in pool.map(deflate, pieces))


def median_time(run: Callable[[], object], runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


CODECS: dict[str, Callable[[memoryview], bytes]] = {
    "isal 0": lambda d: isal_zlib.compress(d, 0, wbits=31),
    "isal 1": lambda d: isal_zlib.compress(d, 1, wbits=31),
    "isal 2": lambda d: isal_zlib.compress(d, 2, wbits=31),
    "isal 3": lambda d: isal_zlib.compress(d, 3, wbits=31),
    "zlib 1": lambda d: zlib.compress(d, 1, wbits=31),
    "zlib 6": lambda d: zlib.compress(d, 6, wbits=31),
}


def compression_rows(name: str, data: bytes, runs: int) -> list[str]:
    rows = []
    cores = os.cpu_count() or 1
    for codec, deflate in CODECS.items():
        size = members(data, deflate, 1)
        wall = median_time(lambda deflate=deflate: members(data, deflate, 1), runs)
        rows.append(f"| {name} | {codec} | 1 | {len(data) / wall / 1e6:.0f} | {len(data) / size:.2f} |")
    for codec in ("isal 1", "zlib 1"):
        deflate = CODECS[codec]
        wall = median_time(lambda deflate=deflate: members(data, deflate, cores), runs)
        rows.append(f"| {name} | {codec} | {cores} | {len(data) / wall / 1e6:.0f} | |")
    return rows


class Store:
    """``async-uploader serve`` in its own process, keeping the bytes in a temporary folder."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "async_uploader", "serve", "--port", "0", "--data-dir", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        if not ready:
            self.close()
            raise SystemExit("the local store printed no URL within 30 s")
        self.url = self.process.stdout.readline().decode().strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def upload(url: str, path: Path, env: dict[str, str], name: str) -> float:
    argv = [
        sys.executable, "-m", "async_uploader", "upload", str(path), "--store-id", "1234567890",
        "--file-type", "FASTQ", "--subject-id", "s", "--sample-id", "x", "--name", name,
        "--endpoint-url", url, "--region", "us-east-1", "--no-progress", "--no-checkpoint",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=1800, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0 or b"verified:" not in done.stderr:
        raise SystemExit(f"upload of {path} failed ({done.returncode}): {done.stderr.decode()}")
    return wall


def gzip_then_upload(url: str, path: Path, env: dict[str, str], name: str) -> float:
    packed = path.with_name(path.name + ".gz")
    started = time.perf_counter()
    with path.open("rb") as source, packed.open("wb") as out:
        subprocess.run(["gzip", "-1", "-c"], stdin=source, stdout=out, check=True, timeout=1800)
    wall = time.perf_counter() - started + upload(url, packed, env, name)
    packed.unlink()
    return wall


def upload_rows(name: str, path: Path, runs: int) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    home = Path(tempfile.mkdtemp(prefix="compress-bench-"))
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        ASYNC_UPLOADER_HOME=str(home / "home"),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    store = Store(home / "store", env)
    try:
        on_the_fly = statistics.median(upload(store.url, path, env, f"{name}-fly-{n}") for n in range(runs))
        first_gzip = statistics.median(gzip_then_upload(store.url, path, env, f"{name}-gz-{n}") for n in range(runs))
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)
    size = path.stat().st_size
    return [
        f"| {name} | plain FASTQ, compressed on the fly | {on_the_fly:.1f} | {size / on_the_fly / 1e6:.0f} |",
        f"| {name} | gzip -1, then upload the .gz | {first_gzip:.1f} | {size / first_gzip / 1e6:.0f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="MiB of plain FASTQ per data set (default 128)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-upload", action="store_true", help="measure compression only")
    args = parser.parse_args()
    folder = HERE / ".data"
    folder.mkdir(exist_ok=True)
    sets = {"demo (40 quality values)": (folder / f"compress-demo-{args.mib}MiB.fastq", demo_plain)}
    sets["four-bin qualities"] = (folder / f"compress-binned-{args.mib}MiB.fastq", binned_plain)
    for path, write in sets.values():
        if not path.exists():
            write(path, args.mib * MIB)
    print(f"MB/s of plain input, 1 MiB gzip members, medians of {args.runs} (cores here: {os.cpu_count()})\n")
    print("| data | deflater, level | threads | MB/s plain | ratio |\n|---|---|---|---|---|")
    for name, (path, _) in sets.items():
        for row in compression_rows(name, path.read_bytes(), args.runs):
            print(row, flush=True)
    if args.no_upload:
        return
    print("\nUpload to a local store on 127.0.0.1, verified, wall time (s) and MB/s of plain input\n")
    print("| data | how | seconds | MB/s plain |\n|---|---|---|---|")
    for name, (path, _) in sets.items():
        for row in upload_rows(name, path, args.runs):
            print(row, flush=True)


if __name__ == "__main__":
    main()
