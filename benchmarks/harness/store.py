"""The project's local sequence store, started as a subprocess in --discard mode for one scenario."""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

STORE_ID = "1234567890"

# `python -m async_uploader.emulator` is the store's own entry point; `async-uploader serve` is the same thing
# wired into the package CLI, tried when the first is not there.
_COMMANDS = (
    ("-m", "async_uploader.emulator"),
    ("-m", "async_uploader", "serve"),
)


class StoreError(RuntimeError):
    pass


class Store:
    """``with Store(["--latency-ms", "20"]) as store: store.url``; CPU seconds of the store via ``cpu()``."""

    def __init__(self, flags: Sequence[str] = (), *, discard: bool = True, start_timeout: float = 30.0) -> None:
        self.flags = list(flags)
        self.discard = discard
        self.start_timeout = start_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Store:
        errors = []
        for command in _COMMANDS:
            argv = [sys.executable, *command, "--port", "0", *self.flags]
            if self.discard:
                argv.append("--discard")
            else:
                self._data_dir = tempfile.TemporaryDirectory(prefix="bench-store-")
                argv += ["--data-dir", self._data_dir.name]
            try:
                self._start(argv)
                return self
            except StoreError as exc:
                errors.append(f"{' '.join(command)}: {exc}")
        raise StoreError("could not start the local store: " + "; ".join(errors))

    def _start(self, argv: list[str]) -> None:
        self._stderr.seek(0)
        self._stderr.truncate()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr)
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        text = line.decode(errors="replace").strip()
        if not text.startswith("http"):
            _stop(proc)
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-2:]
            raise StoreError(" | ".join(tail) or f"no URL line (got {text!r})")
        self.url = text
        self._proc = proc
        # Keep reading whatever else the store prints so a full pipe can never stall it.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()

    def cpu(self) -> float:
        """User + system CPU seconds the store has used so far (0 if it is gone)."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" that ends the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        self._stderr.close()
        if self._data_dir is not None:
            self._data_dir.cleanup()


def _drain(stream: IO[bytes]) -> None:
    try:
        while stream.read(65536):
            pass
    except (OSError, ValueError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def emulator_available() -> bool:
    """True when the store package exists (a regular package, not an empty directory)."""
    try:
        spec = importlib.util.find_spec("async_uploader.emulator")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None
