"""Uploading the read sets of a manifest through one Uploader: reading it, checking its rows, the runner.

Rows run concurrently through one ``Uploader`` (one connection pool, one rate limiter), each with its own
checkpoint under the batch directory. A row that completes is recorded in ``done.jsonl`` there
(``edge.batchstate``), keyed by a hash of the row, so running the same manifest again skips it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from ..core.errors import UploadInterruptedError, UsageError
from ..core.manifest import BatchSummary, ManifestError, ManifestRow, RowOutcome, parse_manifest, plan_batch
from ..edge.batchstate import BatchState
from ..edge.journal import uploader_home
from ..edge.sources import check_source_path
from .uploader import Uploader, UploadHandle

__all__ = ["check_row_sources", "default_batch_dir", "read_manifest", "run_batch"]


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and parse the manifest at ``path``; relative sources are resolved against its folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest {path}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot read: {exc}") from None
    return parse_manifest(text, base_dir=path.resolve().parent, name=str(path))


def check_row_sources(rows: Sequence[ManifestRow], name: str = "manifest") -> None:
    """Check every row's sources exist, are files, are not empty and can be read (before anything uploads)."""
    for row in rows:
        for source, path in row.read_set.sources.items():
            assert isinstance(path, Path)
            try:
                check_source_path(path)
            except UsageError as exc:
                raise ManifestError(f"{name} {row.where}: {source.value.lower()} {exc}") from None


def default_batch_dir(manifest: Path) -> Path:
    """Where a batch keeps its checkpoints and done-rows record unless --checkpoint-dir says otherwise."""
    key = hashlib.sha256(str(manifest.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return uploader_home() / "batches" / f"{manifest.stem}-{key}"


async def run_batch(  # noqa: C901
    uploader: Uploader,
    rows: Sequence[ManifestRow],
    *,
    store_id: str,
    directory: Path,
    max_parallel: int,
    emit: Callable[[RowOutcome], None],
    restart: bool = False,
    keep_on_failure: bool | None = None,
    use_checkpoints: bool = True,
    on_start: Callable[[ManifestRow, UploadHandle], None] | None = None,
    on_finish: Callable[[ManifestRow], None] | None = None,
    on_event: Callable[[ManifestRow], Callable[[dict[str, object]], None]] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    format_error: Callable[[BaseException], str] = str,
) -> BatchSummary:
    """Upload ``rows`` at most ``max_parallel`` at a time through ``uploader``; never raises for one row.

    A row whose files are missing fails alone (its upload does, before anything is created); rows naming the same
    read set upload it once (``duplicate``).
    ``emit`` is called once per row as it finishes (skipped rows first). ``on_start``/``on_finish`` let the caller
    track the handles in flight (to show progress or to stop them on a signal); once ``stopping()`` is true, rows
    not yet started are reported as interrupted. ``on_event(row)`` gives the engine's event callback for a row.
    """
    started = time.monotonic()
    state = BatchState(directory)
    plan = plan_batch(rows, store_id, state.done)
    outcomes: list[RowOutcome] = []

    def finish(*done: RowOutcome) -> None:
        for outcome in done:
            outcomes.append(outcome)
            emit(outcome)

    finish(*plan.skipped)
    gate = anyio.Semaphore(max(1, max_parallel))

    async def one(row: ManifestRow, key: str) -> None:
        try:
            outcome = await upload(row, key)
        finally:
            gate.release()
        finish(outcome, *plan.duplicate_outcomes(key, outcome))

    async def upload(row: ManifestRow, key: str) -> RowOutcome:
        if stopping():
            return RowOutcome(row, "interrupted", error="not started: the batch was stopped")
        checkpoint: Path | bool = directory / "checkpoints" / f"{key}.jsonl" if use_checkpoints else False
        try:
            handle = uploader.start(
                row.read_set,
                store_id=store_id,
                checkpoint=checkpoint,
                restart=restart,
                keep_on_failure=keep_on_failure,
                on_event=on_event(row) if on_event is not None else None,
            )
            if on_start is not None:
                on_start(row, handle)
            try:
                result = await handle
            finally:
                if on_finish is not None:
                    on_finish(row)
        except UploadInterruptedError as exc:
            return RowOutcome(row, "interrupted", error=format_error(exc))
        except Exception as exc:  # one row's failure never stops the others
            return RowOutcome(row, "failed", error=format_error(exc))
        await state.record(key, result.read_set_id, row)
        return RowOutcome(row, "done", read_set_id=result.read_set_id, result=result.as_json())

    async with anyio.create_task_group() as group:
        for row, key in plan.to_upload:
            await gate.acquire()  # a task per row only once it may start: a long manifest is not 10,000 tasks
            group.start_soon(one, row, key, name=f"batch-row-{row.row}")
    ordered = tuple(sorted(outcomes, key=lambda outcome: outcome.row.row))
    return BatchSummary(ordered, time.monotonic() - started)
