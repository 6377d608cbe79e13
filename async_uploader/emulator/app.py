"""HTTP routes of the store, laid out as in botocore's omics service model (API 2022-11-28)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
from aiohttp import web

from .auth import UNSIGNED_PAYLOAD, Verifier
from .errors import ApiError, validation
from .faults import QUOTA_KIND, Fault, Pacer, QuotaBucket, RequestKey, decide, reset_offset
from .options import StoreOptions
from .store import (
    State,
    check_id,
    check_part_number,
    check_source,
    iso,
    page,
    part_info_json,
)

CHUNK = 4 * 1024 * 1024
# A write that blocks longer than this (dirty-page throttling on a slow disk) moves later writes to a thread.
SLOW_WRITE = 0.02
MAX_JSON_BODY = 8 * 1024 * 1024  # Complete of 2 x 10,000 parts is about 2.2 MB
STORE = "/sequencestore/{store}"
# (method, path, operation): the requestUri of each operation in the service model.
ROUTES = (
    ("POST", STORE + "/upload", "CreateMultipartReadSetUpload"),
    ("PUT", STORE + "/upload/{upload}/part", "UploadReadSetPart"),
    ("POST", STORE + "/upload/{upload}/complete", "CompleteMultipartReadSetUpload"),
    ("DELETE", STORE + "/upload/{upload}/abort", "AbortMultipartReadSetUpload"),
    ("POST", STORE + "/upload/{upload}/parts", "ListReadSetUploadParts"),
    ("POST", STORE + "/uploads", "ListMultipartReadSetUploads"),
    ("GET", STORE + "/readset/{readset}/metadata", "GetReadSetMetadata"),
    ("GET", STORE + "/readset/{readset}", "GetReadSet"),
    ("POST", STORE + "/readsets", "ListReadSets"),
)
FAULT_ERRORS = {
    Fault.THROTTLE: ("ThrottlingException", "Rate exceeded"),
    Fault.ERROR_500: ("InternalServerException", "injected internal error"),
    Fault.ERROR_503: ("ServiceUnavailableException", "injected: service unavailable"),
}


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ConnectionDropped(Exception):
    """The store aborted the connection on purpose (an injected reset)."""


@dataclass
class Call:
    """What one request did, for the request log."""

    operation: str
    store_id: str | None = None
    upload_id: str | None = None
    source: str | None = None
    part_number: int | None = None
    nbytes: int = 0
    fault: str | None = None
    body_done: bool = False
    reset: bool = False
    body: bytes = b""
    reset_at: int | None = None


CALL = web.RequestKey("call", Call)


def error_response(err: ApiError) -> web.Response:
    return web.Response(
        status=err.status,
        body=json.dumps({"message": err.message}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": err.code},
    )


class StoreApp:
    """The aiohttp application around a :class:`State`: auth, quotas, faults, body streaming."""

    def __init__(self, options: StoreOptions, state: State, record: Callable[[dict[str, Any]], None]):
        self.options = options
        self.state = state
        self.record = record
        keys = {**options.extra_keys, options.access_key: options.secret_key}
        self.verifier = Verifier(keys, options.clock_skew_limit)
        self.quotas = {kind: QuotaBucket(rate) for kind, rate in (options.quotas or {}).items()}
        self.attempts: dict[RequestKey, int] = {}
        self.pacers: dict[object, Pacer] = {}
        self.timers: set[asyncio.TimerHandle] = set()
        self.threaded_writes = False
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-write")
        handlers: dict[str, Callable[[web.Request, Call], Awaitable[web.StreamResponse]]] = {
            "CreateMultipartReadSetUpload": self.create_upload,
            "UploadReadSetPart": self.upload_part,
            "CompleteMultipartReadSetUpload": self.complete_upload,
            "AbortMultipartReadSetUpload": self.abort_upload,
            "ListReadSetUploadParts": self.list_parts,
            "ListMultipartReadSetUploads": self.list_uploads,
            "GetReadSetMetadata": self.metadata,
            "GetReadSet": self.get_read_set,
            "ListReadSets": self.list_read_sets,
        }
        self.handlers = handlers

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=MAX_JSON_BODY)
        for method, path, operation in ROUTES:
            app.router.add_route(method, path, self.dispatch, name=operation)
        if self.options.clock_offset:
            app.on_response_prepare.append(self.shifted_date)
        return app

    async def shifted_date(self, request: web.Request, response: web.StreamResponse) -> None:
        """The Date header of a store whose clock is ``clock_offset`` seconds off."""
        response.headers["Date"] = email.utils.formatdate(time.time() + self.options.clock_offset, usegmt=True)

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.writer.shutdown(wait=True)

    # --- the common path of every request
    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        route = request.match_info.route.name
        call = Call(operation=route or "Unknown")
        request[CALL] = call
        status, code = 0, None
        try:
            if self.options.latency_ms > 0:
                await asyncio.sleep(self.options.latency_ms / 1000.0)
            if request.match_info.http_exception is not None:
                raise ApiError("UnknownOperationException", f"no operation at {request.method} {request.path}", 404)
            response = await handler(request)
            status = response.status
            return response
        except ApiError as err:
            status, code = err.status, err.code
            if not call.body_done and not call.reset:
                await self.drain(request)
            return error_response(err)
        except ConnectionDropped:
            call.reset = True
            return web.Response(status=500)
        finally:
            self.record(
                {
                    "time": time.time(),
                    "operation": call.operation,
                    "source": call.source,
                    "part_number": call.part_number,
                    "bytes": call.nbytes,
                    "status": 0 if call.reset else status,
                    "error_code": code,
                    "fault": call.fault,
                    "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
                    "store_id": call.store_id,
                    "upload_id": call.upload_id,
                }
            )

    async def drain(self, request: web.Request) -> None:
        try:
            while await request.content.readany():
                pass
        except (OSError, asyncio.IncompleteReadError, web.HTTPException):
            pass

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        call = request[CALL]
        info = request.match_info
        call.store_id = info["store"]
        call.upload_id = info.get("upload")
        check_id(call.store_id, "sequenceStoreId")
        if call.upload_id is not None:
            check_id(call.upload_id, "uploadId")
        if "readset" in info:
            check_id(info["readset"], "id")
        if call.operation == "UploadReadSetPart":
            call.source = request.query.get("partSource")
            number = request.query.get("partNumber", "")
            call.part_number = int(number) if number.isdigit() and len(number) < 9 else None
            content_hash = request.headers.get("x-amz-content-sha256")
            if content_hash is not None:
                self.verify(request, content_hash)
        else:
            call.body = await self.read_json_body(request)
        self.check_quota(call)
        self.inject_fault(request, call)
        return await self.handlers[call.operation](request, call)

    async def read_json_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_JSON_BODY:
            raise validation("request body too large")
        body = await request.read()
        request[CALL].body_done = True
        digest = hashlib.sha256(body).hexdigest()
        sent = request.headers.get("x-amz-content-sha256")
        if sent is not None and sent not in (UNSIGNED_PAYLOAD, digest):
            raise validation("x-amz-content-sha256 does not match the request body")
        self.verify(request, digest if sent is None else sent)
        return body

    def verify(self, request: web.Request, payload_hash: str) -> None:
        now = time.time() + self.options.clock_offset
        self.verifier.verify(request.method, request.raw_path, request.headers, payload_hash, now=now)

    def check_quota(self, call: Call) -> None:
        kind = QUOTA_KIND.get(call.operation)
        bucket = self.quotas.get(kind) if kind else None
        if bucket is not None and not bucket.try_take():
            call.fault = str(Fault.QUOTA)
            raise ApiError("ThrottlingException", f"Rate exceeded for {kind} requests")

    def inject_fault(self, request: web.Request, call: Call) -> None:
        options = self.options.faults
        if not options.active:
            return
        key = RequestKey(
            call.operation,
            call.store_id or "",
            call.upload_id or "",
            call.source or "",
            call.part_number or 0,
        )
        attempt = self.attempts.get(key, 0)
        self.attempts[key] = attempt + 1
        fault = decide(options, key, attempt)
        if fault is None:
            return
        call.fault = str(fault)
        if fault is Fault.RESET:
            length = request.content_length or 0
            if call.operation == "UploadReadSetPart" and length > 0:
                call.reset_at = max(1, reset_offset(options, key, attempt, length))
                return
            self.drop(request, call)
        code, message = FAULT_ERRORS[fault]
        raise ApiError(code, message)

    def drop(self, request: web.Request, call: Call) -> None:
        call.reset = True
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionDropped()

    def json(self, request: web.Request) -> dict[str, Any]:
        raw = request[CALL].body
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError("SerializationException", "request body is not valid JSON", 400) from None
        if not isinstance(body, dict):
            raise ApiError("SerializationException", "request body must be a JSON object", 400)
        return body

    # --- operations
    async def create_upload(self, request: web.Request, call: Call) -> web.StreamResponse:
        reply = self.state.create_upload(request.match_info["store"], self.json(request))
        call.upload_id = reply["uploadId"]
        return web.json_response(reply)

    async def upload_part(self, request: web.Request, call: Call) -> web.StreamResponse:
        upload = self.state.upload(request.match_info["store"], request.match_info["upload"])
        source = check_source(request.query.get("partSource"))
        number = check_part_number(request.query.get("partNumber", ""))
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            raise validation("chunked transfer encoding is not supported: send Content-Length")
        length = request.content_length
        if length is None:
            raise ApiError("ValidationException", "Content-Length is required", 411)
        if length == 0:
            raise validation("a part must not be empty")
        if length > self.options.max_part_size:
            raise validation(f"part size {length} exceeds the maximum of {self.options.max_part_size} bytes")
        sent_hash = request.headers.get("x-amz-content-sha256")
        want_sha = sent_hash is None or sent_hash != UNSIGNED_PAYLOAD
        tmp = self.state.part_tmp_path(upload, source, number)
        received, digest, sha = await self.receive(request, call, tmp, want_sha)
        call.nbytes = received
        try:
            if received != length:
                raise validation(f"body ended after {received} of {length} bytes")
            if sent_hash is None:
                self.verify(request, sha)
            elif want_sha and sha != sent_hash:
                raise validation("x-amz-content-sha256 does not match the request body")
            checksum = self.state.put_part(upload, source, number, size=received, digest=digest, tmp=tmp)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return web.json_response({"checksum": checksum})

    async def receive(
        self, request: web.Request, call: Call, tmp: Path | None, want_sha: bool
    ) -> tuple[int, bytes, str]:
        """Stream the body: hash it, write it to ``tmp`` (unless discarding), pace it, maybe drop it."""
        hasher = xxhash.xxh3_128()
        sha = hashlib.sha256() if want_sha else None
        reset_at = call.reset_at
        pacer = self.pacer(request)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if tmp is not None else -1
        # Page-cache writes are cheapest inline; once the disk proves slow they go to a thread, one at a
        # time per part, overlapping the read of the next chunk so the loop keeps serving other requests.
        writing: concurrent.futures.Future[None] | None = None
        received = 0
        try:
            content = request.content
            while True:
                chunk = await content.read(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if reset_at is not None and received >= reset_at:
                    call.nbytes = received
                    self.drop(request, call)
                hasher.update(chunk)
                if sha is not None:
                    sha.update(chunk)
                if fd >= 0:
                    if writing is not None:
                        await asyncio.wrap_future(writing)
                        writing = None
                    if self.threaded_writes:
                        writing = self.writer.submit(write_all, fd, chunk)
                    else:
                        began = time.perf_counter()
                        write_all(fd, chunk)
                        self.threaded_writes = time.perf_counter() - began > SLOW_WRITE
                if pacer is not None:
                    delay = pacer.delay_after(len(chunk))
                    if delay > 0:
                        await asyncio.sleep(delay)
            if writing is not None:
                await asyncio.wrap_future(writing)
        except BaseException:
            if tmp is not None:
                os.unlink(tmp)
            raise
        finally:
            call.body_done = True
            if fd >= 0:
                if writing is not None and not writing.done():
                    writing.add_done_callback(lambda _: os.close(fd))
                else:
                    os.close(fd)
        return received, hasher.digest(), sha.hexdigest() if sha is not None else ""

    def pacer(self, request: web.Request) -> Pacer | None:
        mbps = self.options.connection_mbps
        if mbps is None or request.transport is None:
            return None
        key = request.transport.get_extra_info("peername")
        found = self.pacers.get(key)
        if found is None:
            if len(self.pacers) > 4096:
                self.pacers.clear()
            found = self.pacers[key] = Pacer(mbps * 1_000_000)
        return found

    async def complete_upload(self, request: web.Request, call: Call) -> web.StreamResponse:
        info = request.match_info
        read_set = self.state.complete(info["store"], info["upload"], self.json(request))
        loop = asyncio.get_running_loop()

        def finish() -> None:
            self.timers.discard(timer)
            self.state.finish_processing(read_set)

        timer = loop.call_later(self.options.processing_delay, finish)
        self.timers.add(timer)
        return web.json_response({"readSetId": read_set.read_set_id})

    async def abort_upload(self, request: web.Request, call: Call) -> web.StreamResponse:
        self.state.abort(request.match_info["store"], request.match_info["upload"])
        return web.json_response({})

    async def list_parts(self, request: web.Request, call: Call) -> web.StreamResponse:
        body = self.json(request)
        upload = self.state.upload(request.match_info["store"], request.match_info["upload"])
        source = check_source(body.get("partSource"))
        call.source = source
        parts = self.state.list_parts(upload, source, body)
        chunk, token = page(parts, request.query.get("maxResults"), request.query.get("nextToken"))
        reply: dict[str, Any] = {"parts": [part_info_json(p) for p in chunk]}
        if token:
            reply["nextToken"] = token
        return web.json_response(reply)

    async def list_uploads(self, request: web.Request, call: Call) -> web.StreamResponse:
        uploads = self.state.list_uploads(request.match_info["store"])
        chunk, token = page(uploads, request.query.get("maxResults"), request.query.get("nextToken"))
        reply: dict[str, Any] = {"uploads": [u.summary() for u in chunk]}
        if token:
            reply["nextToken"] = token
        return web.json_response(reply)

    async def list_read_sets(self, request: web.Request, call: Call) -> web.StreamResponse:
        found = self.state.list_read_sets(request.match_info["store"], self.json(request))
        chunk, token = page(found, request.query.get("maxResults"), request.query.get("nextToken"))
        reply: dict[str, Any] = {"readSets": [read_set.list_item() for read_set in chunk]}
        if token:
            reply["nextToken"] = token
        return web.json_response(reply)

    async def metadata(self, request: web.Request, call: Call) -> web.StreamResponse:
        read_set = self.state.read_set(request.match_info["store"], request.match_info["readset"])
        return web.json_response(read_set.metadata())

    async def get_read_set(self, request: web.Request, call: Call) -> web.StreamResponse:
        read_set = self.state.read_set(request.match_info["store"], request.match_info["readset"])
        source = check_source(request.query.get("file", "SOURCE1"), "file")
        number = check_part_number(request.query.get("partNumber", ""))
        call.source, call.part_number = source, number
        if read_set.status != "ACTIVE":
            raise validation(f"read set {read_set.read_set_id} is {read_set.status}, not ACTIVE")
        part = self.state.part_file(read_set, source, number)
        if part.path is None:
            raise ApiError(
                "ResourceNotFoundException",
                "this store runs with --discard: it counted and hashed the bytes but kept none to return",
            )
        call.nbytes = part.size
        return web.FileResponse(part.path, headers={"Content-Type": "application/octet-stream"})


__all__ = ["ROUTES", "StoreApp", "iso"]
