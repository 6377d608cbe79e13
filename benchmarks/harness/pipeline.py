"""The verification's and the compression's own costs on two data sets, for the verify section.

The data sets, a FASTQ.gz pair each, made once under the data folder: ``demo`` (the generator of ``make demo``:
qualities drawn from 40 values, Huffman-only deflate, about 1.8×) and ``four-bin`` (qualities binned to four values
as current instruments write them, gzip level 6, about 4×). Three tables, each from the standalone scripts'
building blocks (``verify_pipeline.py``, ``store_ingest.py``, ``compress_cost.py``), measured in this process or
its children:

- the verifier against its stages: reading and inflating, hashing (MD5, FASTQ_MD5up) and counting records, each
  alone, then the one-thread summer and the overlapped verifier (``engine.hashing.summarize_path``), in MB/s of
  compressed input, best of the runs, and the verifier's ratio to its slowest stage;
- the store's processing of the pair after Complete (``emulator.ingest``: join, hash, count) against the client's
  verifier over the same pair (both sources at once, as an upload runs it), medians;
- compression on the fly: the package's deflater over the plain text (the data set inflated) in 1 MiB members,
  one thread and every core, its ratio, and the wall time of uploading the plain FASTQ (compressed on the fly,
  verified) against ``gzip -1`` followed by the upload of the .gz (verified), alternated, medians.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import compress_cost
import store_ingest
import verify_pipeline

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.core.fastq import RecordCounter
from async_uploader.edge.sources.compressed import CODEC, MEMBER_SIZE, deflate_member
from async_uploader.emulator.ingest import Job, ingest
from async_uploader.engine.hashing import summarize_path

from .data import describe
from .report import Table, ratio
from .runner import Context

MB = 1_000_000
FAMILY = "MD5up"
STORE_TARGET = 1.25  # the store's processing at most this many times the client's verifier on the same pair


@dataclass(frozen=True)
class DataSet:
    name: str
    what: str
    pair: tuple[Path, Path]

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.pair)


def _write_demo(path: Path, size: int, mate: int) -> None:
    write_fastq_gz(path, size, mate=mate)


def _write_four_bin(path: Path, size: int, mate: int) -> None:
    verify_pipeline.write_four_bin(path, size, seed=mate)


WRITERS: tuple[tuple[str, str, Callable[[Path, int, int], None]], ...] = (
    ("demo", "qualities of 40 values, Huffman-only deflate", _write_demo),
    ("four-bin", "qualities binned to four values, gzip -6", _write_four_bin),
)


def data_sets(ctx: Context, size: int) -> list[DataSet]:
    """Each data set as a pair of FASTQ.gz of about ``size`` bytes per source, made once."""
    folder = ctx.data_dir / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for name, what, writer in WRITERS:
        pair = tuple(folder / f"{name}-{size}-R{mate}.fastq.gz" for mate in (1, 2))
        for mate, path in enumerate(pair, 1):
            if not path.exists():
                ctx.log(f"verify: writing {path.name}")
                tmp = path.with_suffix(".tmp")
                writer(tmp, size, mate)
                tmp.replace(path)
        found.append(DataSet(name, what, (pair[0], pair[1])))
    return found


def _text(path: Path) -> list[bytes]:
    pieces: list[bytes] = []
    verify_pipeline.read_and_inflate(path, pieces)
    return pieces


def _rate(size: int, run: Callable[[], object], runs: int) -> tuple[float, float]:
    """MB/s of ``size`` compressed bytes over the best wall time of ``runs``, and that run's CPU seconds."""
    wall, cpu = verify_pipeline.timed(run, runs)
    return size / wall / MB, cpu


def _stages_row(ctx: Context, data: DataSet, runs: int) -> list[str]:
    path = data.pair[0]
    size = path.stat().st_size
    text = _text(path)  # and page-caches the file
    plain = sum(map(len, text))

    def inflate() -> None:
        verify_pipeline.read_and_inflate(path)

    def md5() -> None:
        digest = hashlib.md5()
        for piece in text:
            digest.update(piece)

    def count() -> None:
        counter = RecordCounter()
        for piece in text:
            counter.update(piece)
        counter.finish()

    def series() -> None:
        verify_pipeline.series(path, FAMILY)

    def verifier() -> None:
        summarize_path(path, FAMILY)

    stages = {name: _rate(size, run, runs)[0] for name, run in (("inflate", inflate), ("hash", md5), ("count", count))}
    slowest = min(stages, key=lambda stage: stages[stage])
    one, _ = _rate(size, series, runs)
    overlapped, cpu = _rate(size, verifier, runs)
    ctx.log(
        f"  {data.name}: stages {', '.join(f'{k} {v:.0f}' for k, v in stages.items())} MB/s; "
        f"verifier {overlapped:.0f} MB/s ({overlapped / stages[slowest]:.2f} × {slowest})"
    )
    return [
        f"{data.name} ({data.what})",
        f"{size / MB:,.0f}",
        f"{plain / size:.1f}×",
        *(f"{value:,.0f}" for value in stages.values()),
        f"{one:,.0f}",
        f"{overlapped:,.0f}",
        f"{overlapped / stages[slowest]:.2f} × {slowest}",
        f"{cpu / (size / MB) * 1000:.1f}",
    ]


def stages_table(ctx: Context, sets: Sequence[DataSet], runs: int) -> Table:
    """Each stage alone, the one-thread summer and the overlapped verifier, over the first source of each set."""
    rows = [_stages_row(ctx, data, runs) for data in sets]
    return Table(
        f"The verifier against its stages, one source, MB/s of compressed input (best of {runs})",
        [
            "data set",
            "MB",
            "ratio",
            "read + inflate alone",
            "MD5 alone",
            "count alone",
            "one-thread summer",
            "verifier (overlapped)",
            "verifier ÷ slowest stage",
            "verifier CPU ms/MB",
        ],
        rows,
        note="The stages alone: reading and inflating the file; MD5 over the inflated text (in memory); counting "
        "its records (in memory). The one-thread summer runs the three in series; the verifier "
        "(`engine.hashing.summarize_path`) overlaps them on threads, so it can pass the series only with a core free.",
    )


def store_table(ctx: Context, sets: Sequence[DataSet], runs: int) -> Table:
    """The store's processing of each pair against the client's verifier on the same pair, alternated, medians."""
    (Path(store_ingest.HERE) / ".data").mkdir(exist_ok=True)  # where the store's scratch part files go
    rows = []
    for data in sets:
        pair = list(data.pair)
        clients, stores = [], []
        for _ in range(runs):
            clients.append(store_ingest.client_run(pair))
            stores.append(store_ingest.store_run(pair, ingest, Job))
        client, store = statistics.median(clients), statistics.median(stores)
        ctx.log(f"  {data.name}: client verifier {client:.2f} s, store {store:.2f} s ({store / client:.2f}×)")
        rows.append(
            [
                data.name,
                f"2 × {describe(data.pair[0].stat().st_size)}",
                f"{client:.2f}",
                f"{store:.2f}",
                ratio(store, client),
                f"≤ {STORE_TARGET:.2f}×",
                "yes" if store <= STORE_TARGET * client else "no",
            ]
        )
    return Table(
        f"The store's processing after Complete against the client's verifier, same pair (median of {runs})",
        ["data set", "pair", "client verifier s", "store processing s", "store ÷ client", "target", "met"],
        rows,
        note="Store: `emulator.ingest` over the pair cut into 16 MiB part files (join, hash, count: what it does "
        "while the read set is PROCESSING_UPLOAD). Client: `engine.hashing.summarize_path` over both sources at "
        "once, as an upload runs it. Alternated run by run, in this process, page-cached.",
    )


def _plain(data: DataSet, folder: Path) -> Path:
    """The first source of ``data`` inflated: the plain FASTQ a user would upload as it is. Its name is not the
    data set's minus ``.gz``: ``gzip -1`` then upload writes the name plus ``.gz`` beside it, and removes it."""
    path = folder / data.pair[0].name.replace("-R1.fastq.gz", "-plain.fastq")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for piece in _text(data.pair[0]):
                out.write(piece)
        tmp.replace(path)
    return path


def _members(data: bytes, threads: int) -> int:
    return int(compress_cost.members(data, deflate_member, threads))


def _upload_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        ASYNC_UPLOADER_HOME=str(home / "home"),
        PYTHONPATH=str(compress_cost.ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def _uploads(ctx: Context, name: str, plain: Path, runs: int) -> tuple[float, float]:
    """Median wall seconds of the plain upload compressed on the fly and of gzip -1 then the upload, alternated."""
    home = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    env = _upload_env(home)
    store = compress_cost.Store(home / "store", env)
    fly, first = [], []
    try:
        for index in range(runs):
            fly.append(compress_cost.upload(store.url, plain, env, f"{name}-fly-{index}"))
            first.append(compress_cost.gzip_then_upload(store.url, plain, env, f"{name}-gz-{index}"))
    except SystemExit as exc:  # the script's way to fail an upload: one scenario's failure, not the harness's exit
        raise RuntimeError(str(exc)) from None
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)
    fly_s, first_s = statistics.median(fly), statistics.median(first)
    ctx.log(f"  {name}: on the fly {fly_s:.2f} s, gzip -1 then upload {first_s:.2f} s")
    return fly_s, first_s


def compression_table(ctx: Context, sets: Sequence[DataSet], runs: int) -> Table:
    """Compression on the fly per data set: plain MB/s on one thread and on every core, ratio, uploads."""
    folder = ctx.data_dir / "pipeline"
    cores = os.cpu_count() or 1
    rows = []
    for data in sets:
        plain = _plain(data, folder)
        text = plain.read_bytes()
        packed = _members(text, 1)
        one = compress_cost.median_time(lambda text=text: _members(text, 1), runs)
        every = compress_cost.median_time(lambda text=text: _members(text, cores), runs)
        fly, first = _uploads(ctx, data.name, plain, runs)
        rows.append(
            [
                data.name,
                f"{len(text) / MB:,.0f}",
                f"{len(text) / one / MB:,.0f}",
                f"{len(text) / every / MB:,.0f}",
                f"{len(text) / packed:.2f}×",
                f"{fly:.2f}",
                f"{first:.2f}",
                ratio(fly, first),
            ]
        )
    return Table(
        f"Compression on the fly ({CODEC}, {MEMBER_SIZE // 2**20} MiB gzip members): MB/s of plain input, ratio, "
        f"and uploads of the plain FASTQ (median of {runs})",
        [
            "data set",
            "plain MB",
            "MB/s, 1 thread",
            f"MB/s, {cores} threads",
            "ratio",
            "upload compressed on the fly s",
            "gzip -1, then upload s",
            "on the fly ÷ gzip then upload",
        ],
        rows,
        note="The plain FASTQ is the data set's first source inflated. Both uploads go to `async-uploader serve` "
        "(its own process, keeping the bytes) through the CLI, verified, alternated run by run; the second "
        "includes `gzip -1` writing the .gz first. Wall seconds, start-up included.",
    )


def tables(ctx: Context, size: int, runs: int) -> list[Table]:
    sets = data_sets(ctx, size)
    ctx.log(f"verify: stages, store and compression on 2 data sets of 2 × {describe(size)}, {runs} run(s)")
    return [stages_table(ctx, sets, runs), store_table(ctx, sets, runs), compression_table(ctx, sets, runs)]
