"""Uploading the read sets of a manifest through one Uploader: reading it, checking its rows, the runner.

Rows run concurrently through one ``Uploader`` (one connection pool, one rate limiter), each with its own
checkpoint under the batch directory. A row that completes is recorded in ``done.jsonl`` there
(``edge.batchstate``), keyed by a hash of the row, with the identity of its files when its upload began. Running
the same manifest again skips a recorded row only while its files are still those (``check_done_rows``): a row
whose files changed runs again through its checkpoint, which reads them again and accepts them only if they hold
the bytes sent (else CheckpointMismatchError: run again with --restart), or is refused when no checkpoint is left.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ..core.checkpoint import Replay, SourceFingerprint
from ..core.config import Source
from ..core.errors import (
    CheckpointMismatchError,
    StillProcessingError,
    UploaderError,
    UploadInterruptedError,
    UsageError,
)
from ..core.fastq import check_file_type
from ..core.manifest import (
    BatchPlan,
    BatchSummary,
    ManifestError,
    ManifestRow,
    RowOutcome,
    RowProblem,
    bad_rows,
    conflicting_rows,
    parse_manifest_rows,
    plan_batch,
)
from ..edge.batchstate import BatchState, DoneRow
from ..edge.journal import load_checkpoint, uploader_home
from ..edge.sources import check_source_path, fingerprint_source, read_head
from .uploader import Uploader, UploadHandle

__all__ = [
    "RESTART_NEEDED",
    "DoneRows",
    "check_done_rows",
    "check_manifest",
    "check_row_sources",
    "default_batch_dir",
    "read_manifest",
    "refused_outcome",
    "row_checkpoint",
    "row_fingerprints",
    "row_problems",
    "run_batch",
    "unfinished_outcome",
]

log = logging.getLogger("async_uploader")

RESTART_NEEDED = "restartNeeded"
"""The key, in the result of a row refused because its files changed since its read set was made, that says only
``--restart`` uploads it (as a new read set)."""


def _manifest_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest {path}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot read: {exc}") from None


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and parse the manifest at ``path``; relative sources are resolved against its folder.

    ManifestError names every malformed row at once. No source is opened (``check_manifest`` does that too).
    """
    rows, problems = parse_manifest_rows(_manifest_text(path), base_dir=path.resolve().parent, name=str(path))
    if problems:
        raise bad_rows(str(path), problems)
    return rows


def check_manifest(path: Path, *, store_id: str, recorded: Container[str] = frozenset()) -> list[ManifestRow]:
    """Read the manifest at ``path`` and check every row before anything is sent: its fields, its sources (files
    that exist and can be read, whose first bytes are of the row's file type), and that no two rows name the same
    file as different read sets. ManifestError names every bad row in one pass. Blocking.

    The rows whose keys are in ``recorded`` (done in an earlier run) are not looked at on disk: their read sets
    stand even when their files have since been removed (``check_done_rows`` judges them).
    """
    name = str(path)
    rows, problems = parse_manifest_rows(_manifest_text(path), base_dir=path.resolve().parent, name=name)
    problems += row_problems([row for row in rows if row.key(store_id) not in recorded])
    problems += conflicting_rows(rows, _same_file)
    if problems:
        raise bad_rows(name, problems)
    return rows


def _same_file(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symbolic link that loops: the path itself names it
        return str(path)


def row_problems(rows: Sequence[ManifestRow]) -> list[RowProblem]:
    """What is wrong with each row's sources: missing, not a regular file, empty, unreadable, or their first
    bytes (up to 1 MiB) not of the row's file type. Blocking; the files are read a few at a time (on network
    storage each read waits on a round trip)."""
    checks = [(row, source, path) for row in rows for source, path in row.read_set.sources.items()]
    with ThreadPoolExecutor(max_workers=_HEAD_READERS) as pool:
        found = list(pool.map(lambda check: _source_problem(*check), checks))
    return [problem for problem in found if problem is not None]


_HEAD_READERS = 8


def _source_problem(row: ManifestRow, source: Source, path: Path | str) -> RowProblem | None:
    assert isinstance(path, Path)
    label = source.value.lower()
    try:
        check_source_path(path)
        why = check_file_type(read_head(path), row.read_set.file_type)
    except UsageError as exc:
        return RowProblem(row.row, row.line, f"{label} {exc}")
    except OSError as exc:
        return RowProblem(row.row, row.line, f"{label} {path}: cannot read: {exc.strerror or exc}")
    if why is None:
        return None
    return RowProblem(row.row, row.line, f"{label} {path} is declared {row.read_set.file_type.value} but {why}")


def check_row_sources(rows: Sequence[ManifestRow], name: str = "manifest") -> None:
    """Check every row's sources exist, are files, are not empty, can be read and hold the row's file type (before
    anything uploads); ManifestError names every bad row."""
    problems = row_problems(rows)
    if problems:
        raise bad_rows(name, problems)


def default_batch_dir(manifest: Path) -> Path:
    """Where a batch keeps its checkpoints and done-rows record unless --checkpoint-dir says otherwise."""
    key = hashlib.sha256(str(manifest.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return uploader_home() / "batches" / f"{manifest.stem}-{key}"


def row_checkpoint(directory: Path, key: str) -> Path:
    """The checkpoint of the row whose key is ``key`` in the batch folder ``directory``."""
    return directory / "checkpoints" / f"{key}.jsonl"


def row_fingerprints(row: ManifestRow) -> tuple[SourceFingerprint, ...] | None:
    """The identity of the row's source files now; None when one cannot be read (its upload says why). Blocking."""
    prints = []
    for source, path in row.read_set.sources.items():
        if not isinstance(path, Path):
            return None
        try:
            prints.append(fingerprint_source(source, path))
        except OSError:
            return None
    return tuple(prints)


@dataclass
class DoneRows:
    """What the record of done rows means for this run of a manifest.

    ``done``: the rows skipped (key -> read set id), whose files are those their read set was made from, or no
    longer there (the read set stands: files are often removed once uploaded), or unverifiable (see ``notes``).
    ``refused``: the rows recorded done whose files changed and that cannot be checked against what was sent (no
    checkpoint left), with why; only --restart uploads them, as new read sets. Every other recorded row runs again.
    ``notes``: one line per row whose record was not enough to skip it, or whose files could not be checked.
    """

    done: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_done_rows(
    rows: Sequence[ManifestRow],
    store_id: str,
    state: BatchState,
    directory: Path,
    *,
    checkpoints: bool = True,
    restart: bool = False,
    name: str = "manifest",
) -> DoneRows:
    """Compare each row recorded as done with its files now (stat and sampled bytes only). Blocking.

    A row whose files changed since its read set was made is not skipped: it runs again through its checkpoint
    (which records Complete and the parts sent: the upload reads the files again and accepts them only when they
    hold the bytes sent, else refuses with CheckpointMismatchError), is uploaded as a new read set under
    ``restart``, or is refused when no checkpoint is left. A record written before identities were kept is
    checked against the row's checkpoint; with no checkpoint either it is skipped, as it was before, and said so.
    """
    result = DoneRows()
    for row in rows:
        key = row.key(store_id)
        recorded = state.rows.get(key)
        if recorded is None or key in result.done or key in result.refused:
            continue
        where = f"{name} {row.where}"
        checkpoint = row_checkpoint(directory, key) if checkpoints else None
        verdict = _judge(row, recorded, checkpoint, restart)
        if verdict is None:
            result.done[key] = recorded.read_set_id
        elif verdict.startswith(_SKIP):
            result.done[key] = recorded.read_set_id
            result.notes.append(f"{where}: {verdict.removeprefix(_SKIP)}")
        elif verdict.startswith(_REFUSE):
            result.refused[key] = verdict.removeprefix(_REFUSE)
        else:
            result.notes.append(f"{where}: {verdict}")
    return result


_SKIP, _REFUSE = "skip:", "refuse:"


def _judge(row: ManifestRow, recorded: DoneRow, checkpoint: Path | None, restart: bool) -> str | None:
    """None to skip the row silently; else a line saying why it is skipped (``_SKIP``), refused (``_REFUSE``),
    or run again."""
    current = row_fingerprints(row)
    if current is None:
        return None  # a source is gone or unreadable since: the read set made from it stands
    read_set = f"read set {recorded.read_set_id}"
    finished = None
    if recorded.sources is None:  # an earlier version's record: the checkpoint knows the files, if it is left
        finished = _finished(checkpoint, recorded.read_set_id)
        if finished is None:
            return (
                f"{_SKIP}recorded as {read_set} by an earlier version that kept no identity of its files, and no "
                "checkpoint is left to check them against: skipped, as before, rather than made a second time from "
                "files that most likely did not change (to upload it again, remove its line from the batch's "
                "done.jsonl)"
            )
        known = finished.header.sources
    else:
        known = recorded.sources
    changed = _changes(known, current)
    if not changed:
        return None
    if finished is None:  # read only for a row whose files changed
        finished = _finished(checkpoint, recorded.read_set_id)
    what = f"{changed} changed since {read_set} was made from it"
    if restart:
        return f"{what}; --restart: uploading it as a new read set"
    if finished is not None:
        return f"{what}; reading it again to compare with the bytes sent"
    return (
        f"{_REFUSE}{what}, and no checkpoint is left to compare it with the bytes sent; "
        "run again with --restart to upload it as a new read set"
    )


def _finished(checkpoint: Path | None, read_set_id: str) -> Replay | None:
    """The row's checkpoint when it records Complete for ``read_set_id``."""
    if checkpoint is None:
        return None
    try:
        replayed = load_checkpoint(checkpoint)
    except UploaderError:
        return None
    return replayed if replayed.read_set_id == read_set_id else None


def _changes(known: Sequence[SourceFingerprint], current: Sequence[SourceFingerprint]) -> str:
    """The sources that are not the files ``known`` describes, and what differs ("" when none)."""
    recorded = {fp.source: fp for fp in known}
    found = []
    for new in current:
        old = recorded.get(new.source)
        label = f"{new.source.value.lower()} {new.path}"
        if old is None:
            found.append(f"{label} (not recorded)")
        elif not old.same_file(new):
            found.append(f"{label} ({_differences(old, new)})")
    return "; ".join(found)


def _differences(old: SourceFingerprint, new: SourceFingerprint) -> str:
    figures = {
        "path": (old.path, new.path),
        "modification time": (old.mtime_ns, new.mtime_ns),
        "change time": (old.ctime_ns, new.ctime_ns),
        "inode": ((old.inode, old.device), (new.inode, new.device)),
        "sampled bytes": (old.fingerprint, new.fingerprint),
    }
    differ = [name for name, (a, b) in figures.items() if a != b or a is None]
    size = f"size {old.size:,} -> {new.size:,} bytes" if old.size != new.size else "same size"
    return f"{size}; {', '.join(differ)} differ" if differ else size


@dataclass(frozen=True)
class _Hooks:
    emit: Callable[[RowOutcome], None]
    on_start: Callable[[ManifestRow, UploadHandle], None] | None
    on_finish: Callable[[ManifestRow], None] | None
    on_event: Callable[[ManifestRow], Callable[[dict[str, object]], None]] | None
    stopping: Callable[[], bool]
    format_error: Callable[[BaseException], str]


async def run_batch(
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
    note: Callable[[str], None] = log.warning,
    name: str = "manifest",
) -> BatchSummary:
    """Upload ``rows`` at most ``max_parallel`` at a time through ``uploader``; never raises for one row.

    A row whose files are missing fails alone (its upload does, before anything is created); rows naming the same
    read set upload it once (``duplicate``); a row recorded done is skipped while its files are unchanged
    (``check_done_rows``; ``note`` gets its lines). A row refused because its files changed fails with
    ``RESTART_NEEDED`` in its result.
    ``emit`` is called once per row as it finishes (skipped rows first). ``on_start``/``on_finish`` let the caller
    track the handles in flight (to show progress or to stop them on a signal); once ``stopping()`` is true, rows
    not yet started are reported as interrupted. ``on_event(row)`` gives the engine's event callback for a row.
    """
    started = time.monotonic()
    state = BatchState(directory)
    checked = await anyio.to_thread.run_sync(
        lambda: check_done_rows(
            rows, store_id, state, directory, checkpoints=use_checkpoints, restart=restart, name=name
        )
    )
    for line in checked.notes:
        note(line)
    hooks = _Hooks(emit, on_start, on_finish, on_event, stopping, format_error)
    runner = _Runner(uploader, store_id, directory, state, hooks, restart, keep_on_failure, use_checkpoints)
    await runner.run(plan_batch(rows, store_id, checked.done), checked.refused, max_parallel)
    ordered = tuple(sorted(runner.outcomes, key=lambda outcome: outcome.row.row))
    return BatchSummary(ordered, time.monotonic() - started)


_PAST_COMPLETE = frozenset({"waiting", "verifying", "done"})
"""A row in one of these states has its read set: it no longer needs a slot to send parts."""


def refused_outcome(row: ManifestRow, why: str) -> RowOutcome:
    """A row not uploaded because its files changed since its read set was made: only --restart uploads it."""
    return RowOutcome(row, "failed", error=why, result={RESTART_NEEDED: True})


def unfinished_outcome(row: ManifestRow, exc: Exception, format_error: Callable[[BaseException], str]) -> RowOutcome:
    """The outcome of a row whose upload raised ``exc``: interrupted when the same command run again takes it on
    (stopped, or still processing at the end of the wait), refused when its files changed, else failed."""
    if isinstance(exc, UploadInterruptedError | StillProcessingError):
        return RowOutcome(row, "interrupted", error=format_error(exc))
    if isinstance(exc, CheckpointMismatchError):
        return refused_outcome(row, format_error(exc))
    return RowOutcome(row, "failed", error=format_error(exc))


class _Runner:
    """The rows of one batch run: each uploaded through ``uploader`` under a semaphore, its outcome reported."""

    def __init__(
        self,
        uploader: Uploader,
        store_id: str,
        directory: Path,
        state: BatchState,
        hooks: _Hooks,
        restart: bool,
        keep_on_failure: bool | None,
        use_checkpoints: bool,
    ) -> None:
        self.uploader, self.store_id, self.directory, self.state = uploader, store_id, directory, state
        self.hooks, self.restart, self.keep_on_failure = hooks, restart, keep_on_failure
        self.use_checkpoints = use_checkpoints
        self.outcomes: list[RowOutcome] = []

    def finish(self, *done: RowOutcome) -> None:
        for outcome in done:
            self.outcomes.append(outcome)
            self.hooks.emit(outcome)

    async def run(self, plan: BatchPlan, refused: dict[str, str], max_parallel: int) -> None:
        self.finish(*plan.skipped)
        gate = anyio.Semaphore(max(1, max_parallel))

        async def one(row: ManifestRow, key: str) -> None:
            held = True

            def release() -> None:  # at Complete, or at the end: whichever comes first
                nonlocal held
                if held:
                    held = False
                    gate.release()

            try:
                outcome = await self.upload(row, key, release)
            finally:
                release()
            self.finish(outcome, *plan.duplicate_outcomes(key, outcome))

        async with anyio.create_task_group() as group:
            for row, key in plan.to_upload:
                if key in refused:
                    outcome = refused_outcome(row, refused[key])
                    self.finish(outcome, *plan.duplicate_outcomes(key, outcome))
                    continue
                await gate.acquire()  # a task per row only once it may start: a long manifest is not 10,000 tasks
                group.start_soon(one, row, key, name=f"batch-row-{row.row}")

    async def upload(self, row: ManifestRow, key: str, completed: Callable[[], None] = lambda: None) -> RowOutcome:
        """Upload one row; ``completed()`` once Complete has made its read set: the row's slot goes to the next
        row while this one waits for the store (and is verified)."""
        hooks = self.hooks
        given = hooks.on_event(row) if hooks.on_event is not None else None

        def on_event(event: dict[str, object]) -> None:
            if event.get("event") == "state" and event.get("state") in _PAST_COMPLETE:
                completed()
            if given is not None:
                given(event)

        if hooks.stopping():
            return RowOutcome(row, "interrupted", error="not started: the batch was stopped")
        checkpoint: Path | bool = row_checkpoint(self.directory, key) if self.use_checkpoints else False
        prints = await anyio.to_thread.run_sync(row_fingerprints, row)  # before a byte is read: a change since shows
        try:
            handle = self.uploader.start(
                row.read_set,
                store_id=self.store_id,
                checkpoint=checkpoint,
                restart=self.restart,
                keep_on_failure=self.keep_on_failure,
                on_event=on_event,
                receipt=self.directory / "receipts" / f"{key}.json",  # `verify BATCH_DIR` finds them
            )
            if hooks.on_start is not None:
                hooks.on_start(row, handle)
            try:
                result = await handle
            finally:
                if hooks.on_finish is not None:
                    hooks.on_finish(row)
        except Exception as exc:  # one row's failure never stops the others
            return unfinished_outcome(row, exc, hooks.format_error)
        await self.state.record(key, result.read_set_id, row, prints)
        return RowOutcome(row, "done", read_set_id=result.read_set_id, result=result.as_json())
