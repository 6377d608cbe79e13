"""``make demo``: upload a synthetic paired FASTQ.gz to a built-in local store, verify it, report the throughput.

    python -m async_uploader.cli.demo [--size 300MB] [--part-size 16MiB] [--dir DIR] [--keep]

Steps: write two gzip-compressed FASTQ files of realistic records (random bases, binned Illumina-style qualities,
read names that never repeat) totalling ``--size`` (default ``$DEMO_SIZE`` or 300MB); start a ``LocalStore`` in
this process (its own thread and event loop, on 127.0.0.1 and a free port); upload both files through the same
code path as ``async-uploader upload`` (with its progress bar on a terminal); read every part back with
GetReadSet and compare it with the files; print the transfer's MB/s, the store's processing time apart, and the
read set id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from .. import cli
from ..core.config import ServiceConfig, Source, parse_size
from ..core.errors import UploaderError
from ..edge.client import OmicsClient
from ..emulator import LocalStore, StoreOptions

__all__ = ["StoreThread", "main", "verify_round_trip", "write_fastq_gz", "write_pair"]

PREFIX = "async-uploader demo"
READ_LENGTH = 150
BLOCK_RECORDS = 4096
STORE_ID = "1000000001"
ACCESS_KEY = "demo"
SECRET_KEY = "demo-secret-key"
_QUALITIES = [chr(33 + q) for q in range(2, 42)]  # Phred+33, Q2..Q41, HiSeq-style: mostly high
_QUALITY_WEIGHTS = [1] * 10 + [2] * 10 + [4] * 10 + [12] * 10


def _say(message: str) -> None:
    sys.stderr.write(f"{PREFIX}: {message}\n")
    sys.stderr.flush()


class _Pool:
    """Random bases and qualities, drawn once; records are windows into them at random offsets."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        span = 1 << 18
        self.bases = "".join(rng.choices("ACGT", weights=(29, 21, 21, 29), k=span + READ_LENGTH))
        self.quals = "".join(rng.choices(_QUALITIES, weights=_QUALITY_WEIGHTS, k=span + READ_LENGTH))
        self.offsets = [rng.randrange(span) for _ in range(BLOCK_RECORDS * 2)]
        self.span = span


def _block(pool: _Pool, block: int, mate: int) -> bytes:
    """One block of FASTQ records: names carry the block number, so no two reads in the file share a name."""
    tile = 1101 + block % 2000
    shift = (block * 7919) % BLOCK_RECORDS
    lines: list[str] = []
    for i in range(BLOCK_RECORDS):
        offset = pool.offsets[(i + shift) % len(pool.offsets)] + mate * 13
        offset %= pool.span
        lines.append(
            f"@DEMO01:42:HXYZDSXY3:{1 + block % 4}:{tile}:{1000 + block // 2000 * 7 + i % 30000}:{2000 + i}"
            f" {mate}:N:0:ACGTACGT+TTGCAAGC\n{pool.bases[offset : offset + READ_LENGTH]}\n+\n"
            f"{pool.quals[offset : offset + READ_LENGTH]}\n"
        )
    return "".join(lines).encode("ascii")


def write_fastq_gz(path: Path, size: int, *, mate: int = 1, seed: int = 0) -> int:
    """Write a gzip FASTQ file of about ``size`` bytes (at least one block); returns the size written."""
    pool = _Pool(seed)
    # wbits 31: a gzip stream. Level 1 with Huffman coding only: random reads offer deflate few matches anyway,
    # and this keeps writing a few hundred MB to seconds.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31, 8, zlib.Z_HUFFMAN_ONLY)
    written = 0
    block = 0
    with path.open("wb") as out:
        while written < size or block == 0:
            chunk = compressor.compress(_block(pool, block, mate))
            out.write(chunk)
            written += len(chunk)
            block += 1
        tail = compressor.flush()
        out.write(tail)
        written += len(tail)
    return written


def write_pair(directory: Path, total: int, *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``demo_R1.fastq.gz`` and ``demo_R2.fastq.gz`` of ``total / 2`` bytes each, in parallel."""
    directory.mkdir(parents=True, exist_ok=True)
    first, second = directory / "demo_R1.fastq.gz", directory / "demo_R2.fastq.gz"
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [
            pool.submit(write_fastq_gz, first, total // 2, mate=1, seed=seed),
            pool.submit(write_fastq_gz, second, total - total // 2, mate=2, seed=seed),
        ]
        for job in jobs:
            job.result()
    return first, second


class StoreThread:
    """A LocalStore running on its own event loop in a background thread, for a synchronous caller."""

    def __init__(self, **options: object) -> None:
        self._options = options
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="local-store", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with LocalStore(StoreOptions(**self._options)) as store:  # type: ignore[arg-type]
                self.url = store.url
                self._ready.set()
                await self._stop.wait()

        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    def __enter__(self) -> StoreThread:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the local store did not start: {self._error}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=30)


async def verify_round_trip(
    service: ServiceConfig, store_id: str, read_set_id: str, files: dict[Source, Path], parts: dict[Source, int]
) -> int:
    """Read every part back with GetReadSet and compare with the files; returns the bytes checked."""
    checked = 0
    async with OmicsClient.from_config(service, limit=4) as client:
        deadline = time.monotonic() + 60
        while True:
            metadata = await client.get_read_set_metadata(store_id, read_set_id)
            if metadata.status == "ACTIVE":
                break
            if metadata.status not in ("PROCESSING_UPLOAD", "PROCESSING") or time.monotonic() > deadline:
                raise UploaderError(f"read set {read_set_id} is {metadata.status}: {metadata.status_message}")
            await asyncio.sleep(0.1)
        for source, path in files.items():
            with path.open("rb") as handle:
                for number in range(1, parts[source] + 1):
                    data = await client.download_part(store_id, read_set_id, source, number)
                    expected = handle.read(len(data))
                    if data != expected:
                        raise UploaderError(f"{source} part {number} read back differs from {path}")
                    checked += len(data)
                if handle.read(1):
                    raise UploaderError(f"{source}: the read set holds fewer bytes than {path}")
    return checked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m async_uploader.cli.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        default=os.environ.get("DEMO_SIZE", "300MB"),
        help="total size of the two FASTQ.gz files (default $DEMO_SIZE or 300MB)",
    )
    parser.add_argument("--part-size", default="16MiB", help="part size for the upload (default 16MiB)")
    parser.add_argument("--max-concurrency", default="16", help="requests in flight (default 16)")
    parser.add_argument("--dir", type=Path, help="write the files here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _isolate_credentials(home: Path) -> None:
    """Point this process (only) at the demo store's keys, so no real AWS profile or key is used."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ["ASYNC_UPLOADER_HOME"] = str(home)


def _upload_argv(options: argparse.Namespace, first: Path, second: Path, url: str) -> list[str]:
    """The `async-uploader upload` command of the demo's pair into the local store at ``url``."""
    argv = [
        "upload",
        str(first),
        str(second),
        "--store-id",
        STORE_ID,
        "--file-type",
        "FASTQ",
        "--subject-id",
        "demo-subject",
        "--sample-id",
        "demo-sample",
        "--name",
        "demo-paired-reads",
        "--description",
        "synthetic paired FASTQ from make demo",
        "--part-size",
        options.part_size,
        "--max-concurrency",
        options.max_concurrency,
        "--endpoint-url",
        url,
    ]
    if options.no_progress:
        argv.append("--no-progress")
    return argv


def run(options: argparse.Namespace) -> int:
    size = parse_size(options.size)
    if size < 1:
        raise UploaderError("--size must be positive")
    with tempfile.TemporaryDirectory(prefix="async-uploader-demo-") as scratch:
        directory = options.dir or Path(scratch) / "reads"
        _isolate_credentials(Path(scratch) / "home")
        started = time.monotonic()
        first, second = write_pair(directory, size, seed=options.seed)
        written = first.stat().st_size + second.stat().st_size
        _say(
            f"wrote {written / 1e6:.1f} MB of paired FASTQ.gz ({first.name}, {second.name}) "
            f"in {time.monotonic() - started:.1f} s"
        )
        with StoreThread(access_key=ACCESS_KEY, secret_key=SECRET_KEY, data_dir=Path(scratch) / "store") as store:
            _say(f"local sequence store at {store.url}")
            argv = _upload_argv(options, first, second, store.url)
            captured = io.StringIO()
            with contextlib.redirect_stdout(captured):  # the `async-uploader upload` command, progress bar and all
                code = cli.main([*argv, "--json"])
            if code != 0:
                raise UploaderError(f"the upload failed (exit {code})")
            result = json.loads(captured.getvalue().strip().splitlines()[-1])
            service = ServiceConfig(endpoint_url=store.url)
            files = {Source.SOURCE1: first, Source.SOURCE2: second}
            parts = {Source(source): count for source, count in result["parts"].items()}
            checked = asyncio.run(verify_round_trip(service, STORE_ID, result["readSetId"], files, parts))
        total = sum(result["bytes"].values())
        _say(
            f"uploaded {total / 1e6:.1f} MB in {sum(parts.values())} parts: "
            f"transfer {result['transferSeconds']:.2f} s, the store's processing {result['storeSeconds']:.2f} s, "
            f"verification {result['verifySeconds']:.2f} s more; {result['seconds']:.2f} s in all"
        )
        _say(f"verified: all {checked / 1e6:.1f} MB read back through GetReadSet match the files")
        if options.keep and options.dir is None:
            kept = Path.cwd() / "demo-reads"
            kept.mkdir(exist_ok=True)
            for path in (first, second):
                os.replace(path, kept / path.name)
            _say(f"files kept in {kept}")
    print(f"transfer: {result['transferMBps']:.1f} MB/s")
    print(f"store processing: {result['storeSeconds']:.2f} s")
    print(f"read set id: {result['readSetId']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        return run(options)
    except (UploaderError, OSError, RuntimeError) as exc:
        sys.stderr.write(f"{PREFIX}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PREFIX}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
