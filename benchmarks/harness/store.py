"""The project's local sequence store, started as a subprocess in --discard mode for one scenario.

With ``tls=True`` it serves HTTPS with a certificate signed by a CA it makes at start; it prints that CA's PEM
file after its URL (``ca-file: PATH``), and every client started against it trusts that file through
``AWS_CA_BUNDLE`` (``store.client_env``), which botocore, aiobotocore, async_uploader and the ceiling client honour.
"""

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
from typing import IO, Protocol

STORE_ID = "1234567890"
CA_PREFIX = "ca-file: "

# `python -m async_uploader.emulator` is the store's own entry point; `async-uploader serve` is the same thing
# wired into the package CLI, tried when the first is not there.
_COMMANDS = (
    ("-m", "async_uploader.emulator"),
    ("-m", "async_uploader", "serve"),
)


class Server(Protocol):
    """What a client run needs of the store it uploads into: its URL, the environment to trust it, its CPU."""

    url: str

    def client_env(self) -> dict[str, str]: ...

    def cpu(self) -> float: ...


class StoreError(RuntimeError):
    pass


class Store:
    """``with Store(["--latency-ms", "20"], tls=True) as store: store.url``; its CPU seconds via ``cpu()``."""

    def __init__(
        self, flags: Sequence[str] = (), *, discard: bool = True, tls: bool = False, start_timeout: float = 30.0
    ) -> None:
        self.flags = list(flags)
        self.discard = discard
        self.tls = tls
        self.start_timeout = start_timeout
        self.url = ""
        self.ca_file = ""
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
            if self.tls:
                argv.append("--tls")
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
        # Unbuffered, so reading the URL line cannot swallow the CA line into a buffer that select() cannot see.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        url = _line(proc, deadline)
        ca_file = _line(proc, deadline).removeprefix(CA_PREFIX) if self.tls else ""
        expected = "https://" if self.tls else "http://"
        if not url.startswith(expected) or (self.tls and not os.path.isfile(ca_file)):
            stop(proc)
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-2:]
            raise StoreError(" | ".join(tail) or f"no {expected} URL and CA file (got {url!r}, {ca_file!r})")
        self.url = url
        self.ca_file = ca_file
        self._proc = proc
        # Keep reading whatever else the store prints so a full pipe can never stall it.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()

    @property
    def transport(self) -> str:
        return "TLS" if self.tls else "HTTP"

    def client_env(self) -> dict[str, str]:
        """What a client process started against this store adds to its environment: the CA to trust."""
        return {"AWS_CA_BUNDLE": self.ca_file} if self.ca_file else {}

    def cpu(self) -> float:
        """User + system CPU seconds the store has used so far (0 if it is gone)."""
        return process_cpu(self.pid)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None
        self._stderr.close()
        if self._data_dir is not None:
            self._data_dir.cleanup()


def _line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The next line the store prints on stdout, or "" if it prints none before ``deadline`` or exits."""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline().decode(errors="replace").strip()
        if proc.poll() is not None:
            break
    return ""


def _drain(stream: IO[bytes]) -> None:
    try:
        while stream.read(65536):
            pass
    except (OSError, ValueError):
        pass


def process_cpu(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not ended 10 s later."""
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
