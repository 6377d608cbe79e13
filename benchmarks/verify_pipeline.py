"""Verification against its stages: each stage alone, the one-thread summer, and the overlapped verifier.

Run: .venv/bin/python benchmarks/verify_pipeline.py [--mib 200] [--runs 3]

Two data sets of about ``--mib`` MB of gzip under benchmarks/.data, page-cached: ``demo`` (the generator of
``make demo``: random qualities over 40 values, Huffman-only deflate, about 1.8x) and ``four-bin`` (qualities binned
to four values as current instruments write them, gzip level 6, 4x and more). For each: reading and inflating
alone, MD5 and SHA-256 alone over the inflated text, counting records alone, ``core.fastq.FastqSummer`` (the three
in series, one thread) and ``engine.hashing.summarize_path`` (overlapped), in MB/s of compressed input, the
verifier's ratio to its slowest stage alone, and the CPU seconds each summer used (the overlapped one can only beat
the series one with a second core free), with the CPU seconds of its busiest thread and, in brackets, the slowest
stage's CPU seconds alone over them: the ratio the verifier would reach with a core free for each thread, which the
load of a shared machine changes less than the wall times. Everything is timed once per round, in turn, and the
best of ``--runs`` rounds kept: on a shared machine the best is the run least slowed by others, and a burst of load
elsewhere falls on a round, not on one of the things compared. The load average is printed after each round.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.core.fastq import Decoder, FastqSummer, RecordCounter
from async_uploader.engine.hashing import READ_CHUNK, ThreadedSummer

HERE = Path(__file__).resolve().parent
FOUR_BINS = "#,:F"


def write_four_bin(path: Path, size: int, seed: int = 0) -> None:
    """150 bp reads whose qualities take four values (mostly the top one), gzip level 6 in one member."""
    rng = random.Random(seed)
    span = 1 << 20
    bases = "".join(rng.choices("ACGT", weights=(29, 21, 21, 29), k=span + 150))
    quals = "".join(rng.choices(FOUR_BINS, weights=(2, 3, 12, 83), k=span + 150))
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    written, number = 0, 0
    with path.open("wb") as out:
        while written < size:
            records = []
            for _ in range(20_000):
                number += 1
                at, bt = rng.randrange(span), rng.randrange(span)
                records.append(
                    f"@LH00123:42:22ABCDLT3:1:{1101 + number // 400000}:{number % 30000}:{number // 30000} 1:N:0:ACGT"
                    f"\n{bases[at : at + 150]}\n+\n{quals[bt : bt + 150]}\n"
                )
            chunk = compressor.compress("".join(records).encode("ascii"))
            out.write(chunk)
            written += len(chunk)
        out.write(compressor.flush())


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object], runs: int) -> tuple[float, float]:
    """The best wall time of ``runs``, and the CPU seconds of that run (the bench's verify section uses it)."""
    best = (float("inf"), 0.0)
    for _ in range(runs):
        started, before = time.perf_counter(), cpu()
        run()
        best = min(best, (time.perf_counter() - started, cpu() - before))
    return best


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


class Best:
    """The best wall time of each thing timed, and the CPU seconds of that run; and the least CPU seconds its
    busiest thread used (a stage alone runs in one thread). The things are timed in rounds, one after the other in
    each, so a burst of load elsewhere falls on all of them alike, not on one."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[float, float]] = {}
        self.busiest: dict[str, float] = {}

    def time(self, label: str, run: Callable[[], object]) -> None:
        started, before, thread = time.perf_counter(), cpu(), time.thread_time()
        other = run()  # the CPU seconds of the thread that ran beside this one, if any
        took = (time.perf_counter() - started, cpu() - before)
        self.best[label] = min(self.best.get(label, took), took)
        busiest = max(time.thread_time() - thread, other if isinstance(other, float) else 0.0)
        self.busiest[label] = min(self.busiest.get(label, busiest), busiest)

    def rate(self, label: str, size: int) -> float:
        return size / self.best[label][0] / 1e6


def read_and_inflate(path: Path, keep: list[bytes] | None = None) -> None:
    decoder = Decoder()
    with open(path, "rb", buffering=0) as f:
        offset = 0
        while chunk := os.pread(f.fileno(), READ_CHUNK, offset):
            offset += len(chunk)
            for piece in decoder.feed(chunk):
                if keep is not None:
                    keep.append(piece)
    list(decoder.finish())


def overlapped(path: Path, family: str) -> float:
    """``engine.hashing.summarize_path``'s loop, with the CPU seconds of the hashing thread."""
    summer = ThreadedSummer(family)
    with open(path, "rb", buffering=0) as f:
        offset = 0
        while chunk := os.pread(f.fileno(), READ_CHUNK, offset):
            offset += len(chunk)
            summer.update(chunk)
    summer.finish()
    return summer.hasher_cpu


def series(path: Path, family: str) -> object:
    summer = FastqSummer(family)
    with open(path, "rb", buffering=0) as f:
        offset = 0
        while chunk := os.pread(f.fileno(), READ_CHUNK, offset):
            offset += len(chunk)
            summer.update(chunk)
    return summer.finish()


FAMILIES = (("MD5up", "md5"), ("SHA256up", "sha256"))


def bench(name: str, path: Path, runs: int) -> None:
    size = path.stat().st_size
    text: list[bytes] = []
    read_and_inflate(path, text)  # and page-caches the file
    ratio = sum(map(len, text)) / size
    print(f"\n{name}: {path.name}, {size / 1e6:.0f} MB compressed, {ratio:.1f}x; {load()}")

    def count() -> None:
        counter = RecordCounter()
        for piece in text:
            counter.update(piece)
        counter.finish()

    def hashed(algorithm: str) -> Callable[[], None]:
        def run() -> None:
            digest = hashlib.new(algorithm)
            for piece in text:
                digest.update(piece)

        return run

    runs_of: dict[str, Callable[[], object]] = {"inflate": lambda: read_and_inflate(path), "count": count}
    for family, algorithm in FAMILIES:
        runs_of[algorithm] = hashed(algorithm)
        runs_of[f"series {family}"] = lambda family=family: series(path, family)
        runs_of[f"overlapped {family}"] = lambda family=family: overlapped(path, family)
    best = Best()
    loads = []
    for _ in range(runs):  # in rounds: each thing once a round, the best of the rounds kept
        for label, run in runs_of.items():
            best.time(label, run)
        loads.append(os.getloadavg()[0])
    inflate, counting = best.rate("inflate", size), best.rate("count", size)
    print(f"  {'read + inflate alone':34s} {inflate:6.0f} MB/s   CPU {best.busiest['inflate']:.2f} s")
    print(f"  {'count records alone':34s} {counting:6.0f} MB/s   CPU {best.busiest['count']:.2f} s")
    for family, algorithm in FAMILIES:
        hashing = best.rate(algorithm, size)
        slowest = min(inflate, hashing, counting)
        heaviest = max(best.busiest[stage] for stage in ("inflate", "count", algorithm))
        print(f"  {algorithm + ' alone':34s} {hashing:6.0f} MB/s   CPU {best.busiest[algorithm]:.2f} s")
        for label in ("series", "overlapped"):
            speed = best.rate(f"{label} {family}", size)
            busiest = best.busiest[f"{label} {family}"]
            print(
                f"  {'verifier ' + family + ' (' + label + ')':34s} {speed:6.0f} MB/s   {speed / slowest:.2f} of the "
                f"slowest stage   CPU {best.best[f'{label} {family}'][1]:.2f} s, busiest thread {busiest:.2f} s "
                f"({heaviest / busiest:.2f})"
            )
    print(f"  load average after each round: {', '.join(f'{x:.1f}' for x in loads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="compressed size of each data set, MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = HERE / ".data"
    folder.mkdir(exist_ok=True)
    demo = folder / f"pipeline-demo-{args.mib}MB.fastq.gz"
    four = folder / f"pipeline-four-bin-{args.mib}MB.fastq.gz"
    if not demo.exists():
        write_fastq_gz(demo, args.mib * 1_000_000)
    if not four.exists():
        write_four_bin(four, args.mib * 1_000_000)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    bench("demo", demo, args.runs)
    bench("four-bin", four, args.runs)


if __name__ == "__main__":
    main()
