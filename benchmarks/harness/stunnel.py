"""An efficient TLS terminator (stunnel, a C program on OpenSSL) in front of the local store.

The store serves plain HTTP on 127.0.0.1; stunnel accepts TLS on another port and forwards the decrypted bytes to
it, one backend connection per client connection (so the store's per-connection caps still apply to each client
connection). The server side of TLS then costs what a real service's terminators cost, not a Python store's, so
the clients' own costs decide. The certificate comes from a CA made here with trustme, for 127.0.0.1 and
localhost; clients trust that CA through ``AWS_CA_BUNDLE``, as against the store's own TLS. When stunnel is not on
the PATH it is installed with ``apt-get install -y stunnel4`` where that works; otherwise the caller skips, saying
why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import trustme

from .store import Store, StoreError, process_cpu, stop

STUNNEL_NAMES = ("stunnel4", "stunnel")


def find_stunnel(install: bool = True) -> tuple[str, str]:
    """(path to stunnel, "") or ("", why not); installs Debian's stunnel4 with apt-get when missing and possible."""
    for name in STUNNEL_NAMES:
        if found := shutil.which(name):
            return found, ""
    if not install:
        return "", "stunnel is not installed"
    if not shutil.which("apt-get"):
        return "", "stunnel is not installed and there is no apt-get to install it"
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "stunnel4"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", f"apt-get install -y stunnel4 failed: {exc}"
    for name in STUNNEL_NAMES:
        if found := shutil.which(name):
            return found, ""
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
    return "", f"apt-get install -y stunnel4 failed: {tail[0]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


SINK = """
import socket, sys, threading
def drain(conn):
    buffer = bytearray(1 << 20)
    with conn:
        while conn.recv_into(buffer):
            pass
listener = socket.create_server(("127.0.0.1", 0))
print(f"http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
while True:
    threading.Thread(target=drain, args=(listener.accept()[0],), daemon=True).start()
"""


class Sink:
    """A process that takes TCP connections on 127.0.0.1 and throws away every byte: no HTTP, no answer."""

    def __init__(self) -> None:
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sink:
        self._proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().decode().strip()
        if not self.url.startswith("http://"):
            self.__exit__()
            raise StoreError("the sink did not start")
        return self

    def cpu(self) -> float:
        return process_cpu(self._proc.pid) if self._proc is not None else 0.0

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None


class Terminated:
    """The store (or a ``Sink``) over plain HTTP with stunnel in front: ``url`` is stunnel's https URL, ``cpu()``
    both servers'."""

    def __init__(
        self,
        stunnel: str,
        flags: Sequence[str] = (),
        *,
        discard: bool = True,
        start_timeout: float = 30.0,
        sink: bool = False,
    ) -> None:
        self.stunnel = stunnel
        self.start_timeout = start_timeout
        self.url = ""
        self.ca_file = ""
        self.tls = True
        self._store: Store | Sink = Sink() if sink else Store(flags, discard=discard, tls=False)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-stunnel-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(self._tmp.name) / "stunnel.log"

    @property
    def transport(self) -> str:
        return "TLS"

    def __enter__(self) -> Terminated:
        self._store.__enter__()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        tmp = Path(self._tmp.name)
        ca = trustme.CA()
        ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server_pem = tmp / "server.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        backend = self._store.url.removeprefix("http://").rstrip("/")
        port = _free_port()
        config = tmp / "stunnel.conf"
        config.write_text(
            "foreground = yes\n"
            "pid =\n"
            f"output = {self._log}\n"
            "debug = 4\n"
            "[store]\n"
            f"accept = 127.0.0.1:{port}\n"
            f"connect = {backend}\n"
            f"cert = {server_pem}\n"
        )
        self._proc = subprocess.Popen(
            [self.stunnel, str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        if not _wait_listening(port, self._proc, time.monotonic() + self.start_timeout):
            log = self._log.read_text(errors="replace").strip().splitlines()[-2:] if self._log.exists() else []
            raise StoreError("stunnel did not start: " + (" | ".join(log) or "no log"))
        self.url = f"https://127.0.0.1:{port}"
        self.ca_file = str(ca_file)

    def client_env(self) -> dict[str, str]:
        return {"AWS_CA_BUNDLE": self.ca_file}

    def cpu(self) -> float:
        """CPU seconds of the store and of stunnel so far."""
        return self._store.cpu() + (process_cpu(self._proc.pid) if self._proc is not None else 0.0)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None
        self._store.__exit__(exc_type, exc, tb)
        self._tmp.cleanup()
