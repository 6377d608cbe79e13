"""Run one client as a child process and measure what it cost: its own CPU time and peak RSS.

``os.wait4`` reaps the child and hands back its resource usage, so the numbers belong to that process alone
(threads included), never to the harness or to the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
GIB = 1024**3
MIB = 1024**2

# Every child talks to the local store with the store's default test credentials.
CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Measured:
    """One finished child: what it reported on stdout plus what the kernel measured."""

    label: str
    ok: bool
    exit_code: int
    wall: float
    cpu: float
    rss_kib: int
    report: dict[str, object] = field(default_factory=dict)
    error: str = ""

    @property
    def bytes(self) -> int:
        value = self.report.get("bytes", 0)
        return int(value) if isinstance(value, int | float) else 0

    @property
    def seconds(self) -> float:
        value = self.report.get("seconds")
        return float(value) if isinstance(value, int | float) and value > 0 else self.wall

    @property
    def parts(self) -> int:
        value = self.report.get("parts", 0)
        return int(value) if isinstance(value, int | float) else 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.ok and self.seconds > 0 else 0.0

    @property
    def parts_per_s(self) -> float:
        return self.parts / self.seconds if self.ok and self.seconds > 0 else 0.0

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu / (self.bytes / GIB) if self.bytes else 0.0

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.update(
            mb_per_s=round(self.mb_per_s, 2),
            parts_per_s=round(self.parts_per_s, 1),
            cpu_per_gib=round(self.cpu_per_gib, 4),
            rss_mib=round(self.rss_mib, 1),
        )
        return data


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(name, None)
    env.update(CLIENT_ENV)
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    if extra:
        env.update(extra)
    return env


def _last_json_line(text: str) -> dict[str, object]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def run_measured(
    label: str,
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    during: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Measured:
    """Start ``argv``, optionally act on it while it runs (``during``), reap it with wait4, parse its JSON line."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=child_env(env))
        timer = threading.Timer(timeout, _kill, args=(proc,))
        timer.start()
        try:
            if during is not None:
                during(proc)
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    report = _last_json_line(stdout)
    ok = proc.returncode == 0 and bool(report.get("ok", True))
    error = ""
    if not ok:
        reported = report.get("error")
        tail = stderr.strip().splitlines()[-3:] if stderr.strip() else []
        error = str(reported) if reported else " | ".join(tail) or f"exit code {proc.returncode}"
        if proc.returncode < 0 and -proc.returncode == signal.SIGKILL:
            error = f"killed after the {timeout:.0f} s timeout"
    return Measured(
        label=label,
        ok=ok,
        exit_code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_kib=usage.ru_maxrss,
        report=report,
        error=error[:500],
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def client_argv(script: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, str(CLIENTS / f"{script}.py"), *args]
