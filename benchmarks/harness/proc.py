"""Run one client as a child process and measure what it cost: its own CPU time and peak RSS.

``os.wait4`` reaps the child and hands back its resource usage, so the numbers belong to that process alone
(threads included), never to the harness or to the store.
"""

from __future__ import annotations

import json
import os
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
        return _count(self.report.get("bytes"))

    @property
    def seconds(self) -> float:
        value = self.report.get("seconds")
        return float(value) if isinstance(value, int | float) and value > 0 else self.wall

    @property
    def parts(self) -> int:
        return _count(self.report.get("parts"))

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
            bytes=self.bytes,
            parts=self.parts,
            seconds=round(self.seconds, 4),
            mb_per_s=round(self.mb_per_s, 2),
            parts_per_s=round(self.parts_per_s, 1),
            cpu_per_gib=round(self.cpu_per_gib, 4),
            rss_mib=round(self.rss_mib, 1),
        )
        return data


def number(value: object) -> float:
    """A reported number, or 0.0 when missing or not a number."""
    return float(value) if isinstance(value, int | float) else 0.0


def _count(value: object) -> int:
    """A reported count: a number, or per-source numbers ({"SOURCE1": n, "SOURCE2": m}) summed."""
    if isinstance(value, dict):
        return sum(_count(item) for item in value.values())
    return int(value) if isinstance(value, int | float) else 0


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
    for raw in reversed(text.strip().splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


class _Launcher:
    """The small spawning process (see launcher.py), started once and shared by every measurement."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            script = Path(__file__).resolve().parent / "launcher.py"
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-E", str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        return self._proc

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdout: str,
        stderr: str,
        timeout: float,
        during: Callable[[int, Path], None] | None,
    ) -> dict[str, object]:
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            job = {"argv": list(argv), "env": dict(env), "stdout": stdout, "stderr": stderr, "timeout": timeout}
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            started: dict[str, object] = json.loads(proc.stdout.readline())
            pid = started.get("pid")
            if not isinstance(pid, int) or not pid:
                raise OSError(f"could not start {argv[0]}: {started.get('error')}")
            if during is not None:
                during(pid, Path(stderr))
            finished: dict[str, object] = json.loads(proc.stdout.readline())
            return finished

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


_LAUNCHER = _Launcher()
close_launcher = _LAUNCHER.close


def run_measured(
    label: str,
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    during: Callable[[int, Path], None] | None = None,
) -> Measured:
    """Start ``argv`` from the launcher, optionally act while it runs (``during(pid, stderr_path)``), parse its JSON.

    The child's CPU (user + sys) and peak RSS come from the launcher's ``wait4``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        started = time.perf_counter()
        usage = _LAUNCHER.run(argv, child_env(env), out_path, err_path, timeout, during)
        wall = time.perf_counter() - started
        stdout = Path(out_path).read_text(errors="replace")
        stderr = Path(err_path).read_text(errors="replace")
    status = usage["status"]
    assert isinstance(status, int)
    exit_code = os.waitstatus_to_exitcode(status)
    report = _last_json_line(stdout)
    ok = exit_code == 0 and bool(report.get("ok", True))
    error = ""
    if not ok:
        reported = report.get("error")
        tail = stderr.strip().splitlines()[-3:] if stderr.strip() else []
        error = str(reported) if reported else " | ".join(tail) or f"exit code {exit_code}"
        if usage.get("timed_out"):
            error = f"killed after the {timeout:.0f} s timeout"
    return Measured(
        label=label,
        ok=ok,
        exit_code=exit_code,
        wall=wall,
        cpu=float(usage["utime"]) + float(usage["stime"]),  # type: ignore[arg-type]
        rss_kib=int(usage["maxrss"]),  # type: ignore[call-overload]
        report=report,
        error=error[:500],
    )


def client_argv(script: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, str(CLIENTS / f"{script}.py"), *args]
