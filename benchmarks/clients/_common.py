"""What every benchmark client shares: its command line, the read-set metadata, and the one JSON line it prints.

A client uploads ``--count`` paired read sets (the same two sources each time) and prints
``{"ok", "bytes", "seconds", "parts", ...}``. ``seconds`` runs from just before the first request to just after the
last Complete: interpreter start-up and imports are not part of the transfer. ``main_thread_cpu`` and
``process_cpu`` are the CPU seconds the main thread and the whole process had used when the line was printed (the
interpreter's exit comes after): the main thread starts the interpreter, imports and, for an asyncio client, runs
the event loop; the difference is the threads that move the bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

REGION = "us-east-1"
SUBJECT = "bench-subject"
SAMPLE = "bench-sample"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--endpoint", required=True, help="store URL, http://127.0.0.1:PORT")
    p.add_argument("--store-id", required=True)
    p.add_argument("--source1", required=True)
    p.add_argument("--source2", default=None)
    p.add_argument("--part-size", type=int, default=0, help="bytes; 0 = the tool's own default")
    p.add_argument("--concurrency", type=int, default=0, help="requests in flight; 0 = the tool's own default")
    p.add_argument("--count", type=int, default=1, help="read sets uploaded at once (same sources each)")
    p.add_argument("--stream", action="store_true", help="the sources are pipes: read them as streams")
    p.add_argument("--stream-bytes", type=int, default=0, help="with --stream: bytes fed into each pipe")
    return p


def sources(args: argparse.Namespace) -> list[str]:
    return [args.source1] + ([args.source2] if args.source2 else [])


def source_sizes(args: argparse.Namespace) -> list[int]:
    """Bytes per source: from the file, or for pipes what the harness says it feeds."""
    if args.stream:
        return [args.stream_bytes for _ in sources(args)]
    return [os.stat(path).st_size for path in sources(args)]


def part_count(args: argparse.Namespace, part_size: int) -> int:
    """Parts of one read set at ``part_size``."""
    return sum(len(split(size, part_size)) for size in source_sizes(args))


def name(index: int) -> str:
    return f"bench-{os.getpid()}-{index}"


def emit(**fields: Any) -> None:
    """Print the JSON line (from the main thread, which every client calls it from)."""
    fields.setdefault("ok", True)
    fields["main_thread_cpu"] = round(time.thread_time(), 3)
    fields["process_cpu"] = round(time.process_time(), 3)
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main(run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> int:
    """Call ``run(args)`` (returns bytes and parts), time it, print the JSON line; failures print ok=false."""
    started = time.perf_counter()
    try:
        fields = run(args)
    except Exception as exc:
        traceback.print_exc()
        emit(ok=False, error=f"{type(exc).__name__}: {exc}"[:400], seconds=time.perf_counter() - started)
        return 1
    fields.setdefault("seconds", time.perf_counter() - started)
    emit(**fields)
    return 0


def split(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(number, offset, length) of each part of a ``size``-byte source."""
    count = max(1, -(-size // part_size))
    return [(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]
