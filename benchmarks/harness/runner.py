"""What scenarios share: the run context, the client catalogue, and measuring a client against a store."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .proc import MIB, Measured, client_argv, run_measured
from .store import STORE_ID, Server

# The knobs of the "tuned" rows, in one place. On a fast local store large parts and a handful of connections
# win; a distant store wants many connections and smaller parts.
TUNED_LOCAL = ("--part-size", str(100 * MIB), "--concurrency", "8", "--uvloop")
TUNED_DISTANT = ("--part-size", str(16 * MIB), "--concurrency", "64", "--uvloop")
TM_TUNED_DISTANT = ("--part-size", str(16 * MIB), "--concurrency", "64")


@dataclass(frozen=True)
class Client:
    """A row of a table: a client script and the arguments that make it this variant."""

    label: str
    script: str
    args: tuple[str, ...] = ()

    def with_args(self, label: str, *args: str) -> Client:
        return Client(label, self.script, self.args + args)


OURS = Client("async_uploader (defaults)", "ours")
OURS_TUNED = Client("async_uploader (tuned)", "ours", TUNED_LOCAL)
TM = Client("TransferManager (defaults)", "transfer_manager")
BOTO3 = Client("boto3 loop", "boto3_loop")
AIOBOTOCORE = Client("aiobotocore + semaphore", "aiobotocore_sem")
CEILING = Client("ceiling: bare aiohttp PUT", "ceiling")


def engine_available() -> bool:
    try:
        return importlib.util.find_spec("async_uploader.engine.uploader") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Context:
    quick: bool
    runs: int
    gib: float
    data_dir: Path
    out_dir: Path
    timeout: float
    pipeline_mb: int = 200
    ours: bool = field(default_factory=engine_available)
    skipped: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def usable(self, clients: Sequence[Client]) -> list[Client]:
        """Leave out our own engine's rows while the package has none (noted once in the results)."""
        if self.ours:
            return list(clients)
        dropped = [c.label for c in clients if c.script == "ours"]
        if dropped:
            self.skipped += [label for label in dropped if label not in self.skipped]
        return [c for c in clients if c.script != "ours"]

    def repeat(self, wanted: int) -> int:
        return 1 if self.quick else max(1, min(self.runs, wanted))


def measure(
    ctx: Context,
    store: Server,
    client: Client,
    sources: Sequence[Path | str],
    *extra: str,
    during: Callable[..., None] | None = None,
) -> Measured:
    args = ["--endpoint", store.url, "--store-id", STORE_ID, "--source1", str(sources[0])]
    if len(sources) > 1:
        args += ["--source2", str(sources[1])]
    before = store.cpu()
    result = run_measured(
        client.label,
        client_argv(client.script, [*args, *client.args, *extra]),
        timeout=ctx.timeout,
        env=store.client_env(),
        during=during,
    )
    result.report["store_cpu"] = round(store.cpu() - before, 3)
    status = f"{result.mb_per_s:8.1f} MB/s" if result.ok else f"FAILED: {result.error[:200]}"
    ctx.log(f"  {client.label:<42} {status}  cpu {result.cpu:6.2f} s  rss {result.rss_mib:6.0f} MiB")
    return result


def warm(sources: Sequence[Path | str]) -> None:
    """Read every regular file among ``sources`` to its end (into the page cache), discarding the bytes."""
    buffer = bytearray(8 * 1024 * 1024)
    for source in sources:
        if not os.path.isfile(source):
            continue
        with open(source, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def evict(directory: Path) -> None:
    """Drop the page cache's copy of every regular file under ``directory`` (POSIX_FADV_DONTNEED: clean pages
    only, no privileges needed), so that the next reader starts from free memory rather than paying to evict
    what the one before it read."""
    advice = getattr(os, "POSIX_FADV_DONTNEED", None)
    if advice is None:
        return
    for path in directory.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, advice)
        finally:
            os.close(fd)


def alternate(
    ctx: Context,
    store: Server,
    clients: Sequence[Client],
    sources: Sequence[Path | str],
    runs: int,
    *extra: str,
    settle: float = 0.0,
) -> dict[str, list[Measured]]:
    """Run the clients A B C A B C ... ``runs`` times, ``settle`` seconds idle before each; grouped by label.

    The sources are read once first, so that the first client does not pay for bringing them into the page cache
    (after a scenario that read other files, the first run of a 2 × 1 GiB pair once took 21 s against 3)."""
    warm(sources)
    results: dict[str, list[Measured]] = {client.label: [] for client in clients}
    for index in range(runs):
        ctx.log(f" run {index + 1}/{runs}")
        for client in clients:
            if settle > 0:
                time.sleep(settle)
            results[client.label].append(measure(ctx, store, client, sources, *extra))
    return results
