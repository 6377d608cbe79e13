"""LocalStore: start the emulated sequence store in the running event loop."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiohttp import web

from .app import CHUNK, StoreApp
from .options import StoreOptions
from .store import State
from .tls import client_context, server_context
from .wire import StoreRunner

# After an early refusal (a body left unread), what still arrives is discarded for at most this long before the
# connection is closed, so the client gets to read the reply instead of a reset.
LINGERING = 5.0


class LocalStore:
    """An emulated HealthOmics sequence store listening on ``options.host:options.port``.

    ``async with LocalStore(StoreOptions()) as store:`` → ``store.url``, ``store.requests`` (one dict per
    finished request, the same records as the JSON-lines log), ``store.data_dir``; with ``tls=True`` also
    ``store.ca_path`` (the CA file of a made certificate) and ``store.client_ssl_context()``.
    """

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options if options is not None else StoreOptions()
        self.requests: list[dict[str, Any]] = []
        self._own_dir = self.options.data_dir is None
        self.data_dir: Path = (
            Path(tempfile.mkdtemp(prefix="omics-store-"))
            if self.options.data_dir is None
            else Path(self.options.data_dir)
        )
        self.state = State(self.data_dir, self.options.discard, self.options.faults.seed)
        self._app = StoreApp(self.options, self.state, self._record)
        self._runner: web.AppRunner | None = None
        self._log: IO[str] | None = None
        self.url = ""
        self.port = 0
        self.ca_path: Path | None = None

    def _record(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)
        if self._log is not None:
            self._log.write(json.dumps(entry) + "\n")
            self._log.flush()

    async def start(self) -> LocalStore:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.options.log_path is not None:
            self._log = open(self.options.log_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
        context: ssl.SSLContext | None = None
        if self.options.tls:
            context, self.ca_path = server_context(self.options.tls_cert, self.options.tls_key, self.data_dir)
        runner = StoreRunner(
            self._app.application(),
            access_log=None,
            read_bufsize=CHUNK,
            handle_signals=False,
            keepalive_timeout=self.options.idle_timeout,
            lingering_time=LINGERING,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port, reuse_address=True, ssl_context=context)
        await site.start()
        self._runner = runner
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])
        host = self.options.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if context else 'http'}://{shown}:{self.port}"
        return self

    def hold_processing(self) -> None:
        """Keep every read set PROCESSING_UPLOAD, past its ingest delay, until ``release_processing()``: a test
        sees how many are processed at once from the store's own view, with no clock involved."""
        self._app.released.clear()

    def release_processing(self) -> None:
        """Let the read sets held by ``hold_processing()`` end their processing (each no sooner than its delay)."""
        self._app.released.set()

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this store's made CA (for a given certificate, the system's CAs)."""
        if self.ca_path is None:
            return ssl.create_default_context()
        return client_context(self.ca_path)

    async def close(self) -> None:
        await self._app.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> LocalStore:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
