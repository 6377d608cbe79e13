"""More than one core for one upload: part bodies sent from event loops in threads of their own.

``WorkerTransport`` wraps the caller's ``HttpTransport``. Part bodies (``ScratchBody``) go to whichever event
loop has the fewest in flight: the caller's, or one of ``workers - 1`` loops each running in its own thread
with its own ``HttpTransport`` (its own connections). Everything else (signing, the rate limiter, retries, the
checkpoint, control calls) stays on the caller's loop: only reading, hashing, encrypting and writing a body move.
Those release the GIL (``preadv``, OpenSSL's writes, hashlib over large buffers), so the threads use more cores
where the CPU, not the network, is the limit. A body's progress callbacks are handed back to the caller's loop
(``loop.call_soon_threadsafe``).

Cancelling a send on the caller's loop cancels it on its worker and waits until the worker has let go of the
body: a part's buffer is never reused while another thread still reads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Mapping

import anyio

from ..core.proxy import Proxy
from .messages import BodySource, ProgressCall, Response, ScratchBody
from .transport import HttpTransport

__all__ = ["WorkerTransport"]


class _Worker:
    """An event loop running in a thread of its own, with its own transport."""

    def __init__(self, name: str, transport: HttpTransport) -> None:
        self.transport = transport
        self.loop = asyncio.new_event_loop()
        self.in_flight = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            self.loop.run_until_complete(self.transport.aclose())
        finally:
            self.loop.close()

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: ScratchBody, call: ProgressCall
    ) -> Response:
        done: concurrent.futures.Future[Response] = concurrent.futures.Future()
        tasks: list[asyncio.Task[Response]] = []

        def start() -> None:
            task = self.loop.create_task(self.transport.send_with(method, url, headers, body, call))
            tasks.append(task)
            task.add_done_callback(finished)

        def cancel() -> None:  # on the worker, after start(): call_soon_threadsafe keeps the order
            tasks[0].cancel()

        def finished(task: asyncio.Task[Response]) -> None:
            if task.cancelled():
                done.cancel()
            elif (exc := task.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(task.result())

        self.in_flight += 1
        try:
            self.loop.call_soon_threadsafe(start)
            waiter = asyncio.wrap_future(done)
            try:
                return await asyncio.shield(waiter)
            except asyncio.CancelledError:
                if not waiter.done():
                    self.loop.call_soon_threadsafe(cancel)
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait([waiter])
                raise
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


class WorkerTransport:
    """``main`` for every request, and part bodies spread over ``main``'s loop and ``len(extra)`` worker loops."""

    def __init__(self, main: HttpTransport, extra: list[HttpTransport]) -> None:
        self.main = main
        self._extra = extra
        self._workers: list[_Worker] = []
        self._main_in_flight = 0

    @classmethod
    def make(cls, workers: int, build: Callable[[], HttpTransport]) -> WorkerTransport:
        """``workers`` event loops in all (the caller's among them), each with a transport from ``build()``."""
        return cls(build(), [build() for _ in range(workers - 1)])

    @property
    def workers(self) -> int:
        return 1 + len(self._extra)

    def proxy_for(self, url: str) -> Proxy | None:
        return self.main.proxy_for(url)

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | BodySource) -> Response:
        if not isinstance(body, ScratchBody) or not self._extra:
            return await self.main.send(method, url, headers, body)
        if not self._workers:  # started inside the caller's loop, on first use
            self._workers = [_Worker(f"async-uploader-worker-{n + 1}", t) for n, t in enumerate(self._extra)]
        worker = min(self._workers, key=lambda w: w.in_flight)
        if self._main_in_flight <= worker.in_flight:
            self._main_in_flight += 1
            try:
                return await self.main.send(method, url, headers, body)
            finally:
                self._main_in_flight -= 1
        call = asyncio.get_running_loop().call_soon_threadsafe
        return await worker.send(method, url, headers, body, call)

    async def aclose(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            await anyio.to_thread.run_sync(worker.close)
        await self.main.aclose()
        if not workers:  # never started: nothing was opened on them, and their loops do not exist
            for transport in self._extra:
                await transport.aclose()

    async def __aenter__(self) -> WorkerTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
