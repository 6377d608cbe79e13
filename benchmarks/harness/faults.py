"""Scenario 6, under faults: throughput through 5% throttling (HTTP and TLS), and what an interruption plus resume costs
(TLS)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from .compare import Setting, cpu_per_gib, head_to_head, headline, mb_per_s
from .data import describe, ensure_pair
from .proc import GIB, MIB, number, run_measured
from .report import Section, Table, ok_text, ratio, summarize
from .runner import OURS, TM, Client, Context
from .store import STORE_ID, Store

THROTTLE_RATE = 0.05
CLEAN = Setting("light store")
THROTTLED = Setting(f"{THROTTLE_RATE:.0%} throttled", ("--throttle-rate", str(THROTTLE_RATE), "--seed", "1"))


def _throttling(ctx: Context, section: Section, sources: tuple[Path, Path], small: int, *, tls: bool) -> None:
    runs = ctx.repeat(3)
    part = ("--part-size", str(small))
    clients = [
        OURS,
        Client(f"async_uploader ({describe(small)} parts)", OURS.script, part),
        TM,
        Client(f"TransferManager ({describe(small)} parts)", TM.script, part),
    ]
    ctx.log(f"faults: {THROTTLE_RATE:.0%} throttling, {runs} run(s), over {'TLS' if tls else 'HTTP'}")
    clean = head_to_head(ctx, CLEAN.over(tls=tls), clients, sources, runs)
    faulty = head_to_head(ctx, THROTTLED.over(tls=tls), clients, sources, runs)
    tm_faulty = faulty.reference_median()
    rows = []
    for client in ctx.usable(clients):
        before = summarize(clean.of(client), mb_per_s)
        after = summarize(faulty.of(client), mb_per_s)
        throttles = summarize(faulty.of(client), lambda r: number(r.report.get("throttles")))
        rows.append(
            [
                faulty.setting.label(client).label,
                before.text(),
                after.text(),
                ratio(after.median, before.median),
                ratio(after.median, tm_faulty),
                summarize(faulty.of(client), cpu_per_gib).text(2),
                throttles.text() if client.script == OURS.script else "not reported",
                ok_text(faulty.of(client)),
            ]
        )
    clean.record(section, "clean")
    faulty.record(section, "throttled")
    if tls:
        section.headlines.append(headline("faults", f"{THROTTLE_RATE:.0%} throttled", faulty, OURS))
    section.tables.append(
        Table(
            f"Throughput with {THROTTLE_RATE:.0%} of requests answered 429 ThrottlingException "
            f"(`{' '.join(THROTTLED.flags)}`), over {faulty.setting.transport}",
            [
                "client",
                "MB/s, no faults",
                f"MB/s, {THROTTLE_RATE:.0%} throttled",
                "kept",
                "× TransferManager (defaults), throttled",
                "client CPU s/GiB, throttled",
                "throttles seen",
                "ok (throttled)",
            ],
            rows,
        )
    )


def _cli(store: Store, sources: tuple[Path, Path], checkpoint: Path, part: int) -> list[str]:
    return [
        sys.executable, "-m", "async_uploader", "upload", str(sources[0]), str(sources[1]),
        "--store-id", STORE_ID, "--file-type", "FASTQ", "--subject-id", "bench-subject",
        "--sample-id", "bench-sample", "--name", f"resume-{checkpoint.stem}",
        "--endpoint-url", store.url, "--region", "us-east-1", "--max-rate", "none",
        "--part-size", str(part), "--checkpoint", str(checkpoint), "--json", "--no-progress", "--events",
    ]  # fmt: skip


def _parts_done(stderr: Path) -> int:
    try:
        text = stderr.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"part"' in line and '"event"' in line)


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _interrupt_after(pid: int, stderr: Path, parts: int, timeout: float) -> None:
    """SIGINT the upload once its --events stream shows ``parts`` acknowledged parts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _exited(pid):
        if _parts_done(stderr) >= parts:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            return
        time.sleep(0.005)


def _interruption(ctx: Context, section: Section, sources: tuple[Path, Path], part: int) -> None:
    runs = ctx.repeat(3)
    rows = []
    ctx.log(f"faults: interruption at ~50% and resume, {runs} run(s)")
    with CLEAN.store() as store, tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        env = store.client_env()
        for index in range(runs):
            whole = run_measured(
                "uninterrupted",
                _cli(store, sources, Path(tmp, f"whole-{index}.ckpt"), part),
                timeout=ctx.timeout,
                env=env,
            )
            half = max(1, whole.parts // 2)
            deadline = 2 * whole.wall + 10

            def interrupt(pid: int, stderr: Path, half: int = half, deadline: float = deadline) -> None:
                _interrupt_after(pid, stderr, half, deadline)

            path = Path(tmp, f"cut-{index}.ckpt")
            first = run_measured(
                "interrupted", _cli(store, sources, path, part), timeout=ctx.timeout, env=env, during=interrupt
            )
            second = run_measured("resumed", _cli(store, sources, path, part), timeout=ctx.timeout, env=env)
            total = first.wall + second.wall
            resumed = int(number(second.report.get("resumedParts")))
            parts = max(1, second.parts)
            rows.append(
                [
                    str(index + 1),
                    f"{whole.wall:.2f}" if whole.ok else f"failed: {whole.error[:80]}",
                    f"{first.wall:.2f} (exit {first.exit_code})",
                    f"{second.wall:.2f}" if second.ok else f"failed: {second.error[:80]}",
                    f"{total - whole.wall:+.2f} ({ratio(total, whole.wall)})",
                    f"{whole.seconds:.2f} / {second.seconds:.2f}",
                    f"{resumed}/{parts}",
                ]
            )
            for measured in (whole, first, second):
                ctx.log(f"  {measured.label:<14} {measured.wall:6.2f} s  exit {measured.exit_code}")
            section.add_runs(f"resume run {index + 1}", [whole, first, second])
    section.tables.append(
        Table(
            f"Interruption and resume over TLS: `async-uploader upload` with `--checkpoint`, {describe(part)} parts, "
            "SIGINT once half the parts are acknowledged (counted from `--events`), then the same command again",
            [
                "run",
                "uninterrupted s",
                "interrupted s",
                "resume s",
                "cost over uninterrupted",
                "transfer s: whole / resume",
                "parts resumed",
            ],
            rows,
            note="Times are whole-process wall clock (start-up included on every leg, which dominates small "
            "uploads); the transfer column is the CLI's own reported seconds. Exit 75 means interrupted and "
            "resumable; parts resumed counts those the checkpoint already held, in-flight parts included.",
        )
    )


def run(ctx: Context) -> Section:
    size = 16 * MIB if ctx.quick else int(ctx.gib * GIB)
    small = 1 * MIB if ctx.quick else 8 * MIB
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "faults",
        "Under faults",
        intro=f"Paired 2 × {describe(size)} uploads into the local store in `--discard` mode.",
    )
    for tls in (False, True):
        _throttling(ctx, section, sources, small, tls=tls)
    if ctx.ours:
        _interruption(ctx, section, sources, small)
    else:
        ctx.usable([OURS])
    section.notes += [
        "TransferManager retries through botocore's default retry mode (legacy here): up to 5 attempts per request, "
        "no client-side rate adaptation.",
        "Throttling is measured over HTTP and over TLS; the interruption over TLS only, and for async_uploader alone: "
        "TransferManager keeps no checkpoint to resume from.",
    ]
    return section
