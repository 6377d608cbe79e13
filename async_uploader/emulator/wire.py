"""The HTTP edge of the store: rest-json error replies, bounded bodies, timeouts, and aiohttp's own refusals.

aiohttp answers requests it cannot parse (a bad request line, a header too long, a broken chunked body) by
itself, in text/plain. The runner here plugs a request handler whose ``handle_error`` answers those too in the
service's shape — status, ``x-amzn-ErrorType`` and ``{"message"}`` — so no reply of the store is ever
anything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web, web_protocol, web_server

from .errors import ApiError, for_status, too_large

LOG = logging.getLogger("async_uploader.emulator")


def error_response(err: ApiError, *, close: bool = False) -> web.Response:
    response = web.Response(
        status=err.status,
        body=json.dumps({"message": err.message}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": err.code},
    )
    if close:
        # The body was not read: say so and close once the reply is out (aiohttp discards what still
        # arrives for at most its lingering time, without keeping it anywhere).
        response.force_close()
    return response


async def read_bounded(request: web.Request, limit: int, patience: float) -> bytes:
    """The whole body (Content-Length or chunked), refused with 413 past ``limit`` bytes, 408 when slow."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"request body of {request.content_length} bytes exceeds the limit of {limit}")
    pieces: list[bytes] = []
    size = 0
    while True:
        piece = await read_some(request, patience)
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > limit:
            raise too_large(f"request body exceeds the limit of {limit} bytes")
        pieces.append(piece)


async def read_some(request: web.Request, patience: float, size: int = 4 * 1024 * 1024) -> bytes:
    """The next piece of the body; 408 when none arrives for ``patience`` seconds (a slow or stalled client)."""
    try:
        async with asyncio.timeout(patience):
            return await request.content.read(size)
    except TimeoutError:
        raise ApiError("RequestTimeoutException", f"no request body bytes arrived for {patience:g} s") from None
    except web.HTTPException as exc:  # aiohttp's own limits (e.g. a chunk too large)
        raise for_status(exc.status, exc.reason) from None


class RestJsonHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what it refuses by itself in rest-json."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 and not isinstance(exc, ConnectionError | asyncio.TimeoutError):
            LOG.error("unhandled error answering %s", getattr(request, "path", "?"), exc_info=exc)
        if request.writer.output_size > 0:  # a reply is under way: only closing is left
            raise ConnectionError("the reply is already under way")
        text = message or (str(exc) if exc is not None else "") or "bad request"
        return error_response(for_status(status, text.splitlines()[0][:300]), close=True)


class RestJsonServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return RestJsonHandler(self, loop=self._loop, **self._kwargs)


class StoreRunner(web.AppRunner):
    """An AppRunner whose connections are handled by :class:`RestJsonHandler`."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = RestJsonServer
        return server
