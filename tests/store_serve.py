"""``python -m async_uploader.emulator`` as a subprocess for the store's tests: its URL and CA file as printed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    url: str
    ca_file: Path | None
    log: Path


@contextmanager
def serve(tmp: Path, *flags: str) -> Iterator[Served]:
    """Run the store until the block ends; its stderr must stay empty (no traceback, no warning)."""
    log = tmp / "requests.jsonl"
    command = [sys.executable, "-m", "async_uploader.emulator", "--data-dir", str(tmp / "data"), "--log", str(log)]
    with subprocess.Popen(
        [*command, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http"), proc.stderr.read()
            ca_file = None
            if url.startswith("https://"):
                line = proc.stdout.readline().strip()
                assert line.startswith("ca-file: "), line
                ca_file = Path(line.removeprefix("ca-file: "))
            yield Served(url, ca_file, log)
        finally:
            proc.terminate()
            code = proc.wait(timeout=20)
            errors = proc.stderr.read() if proc.stderr else ""
    assert code == 0 and errors == "", (code, errors)
