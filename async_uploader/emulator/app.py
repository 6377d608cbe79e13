"""HTTP routes of the store, laid out as in botocore's omics service model (API 2022-11-28)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .auth import UNSIGNED_PAYLOAD, Verifier
from .errors import ApiError, for_status, not_found, validation
from .faults import QUOTA_KIND, Fault, Pacer, QuotaBucket, RequestKey, decide, reset_offset
from .ingest import Cancelled, Job, Outcome, ingest
from .options import StoreOptions
from .parsing import check_id, check_part_number, check_source, json_object, page
from .records import ReadSet, iso, part_info_json
from .store import State, create_identity
from .transfer import CHUNK, Receiver, send_slice
from .wire import LOG, error_response, read_bounded

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
    ("GET", STORE, "GetSequenceStore"),
)
FAULT_ERRORS = {
    Fault.THROTTLE: ("ThrottlingException", "Rate exceeded"),
    Fault.ERROR_500: ("InternalServerException", "injected internal error"),
    Fault.ERROR_503: ("ServiceUnavailableException", "injected: service unavailable"),
}


def wants_body_sha256(sent_hash: str | None, hash_parts: bool) -> bool:
    """Whether a part body is SHA-256 hashed as it arrives.

    Needed to check a signature over the body (no ``x-amz-content-sha256``) or a declared body hash; with
    ``hash_parts`` always, UNSIGNED-PAYLOAD included.
    """
    return hash_parts or sent_hash != UNSIGNED_PAYLOAD


class ConnectionDropped(Exception):
    """The store aborted the connection on purpose (an injected reset)."""


@dataclass
class Call:
    """What one request did, for the request log."""

    operation: str
    store_id: str | None = None
    upload_id: str | None = None
    read_set_id: str | None = None
    source: str | None = None
    part_number: int | None = None
    nbytes: int = 0
    fault: str | None = None
    body_done: bool = False
    reset: bool = False
    body: bytes = b""
    reset_at: int | None = None


CALL = web.RequestKey("call", Call)


class StoreApp:
    """The aiohttp application around a :class:`State`: auth, quotas, faults, body streaming, processing."""

    def __init__(self, options: StoreOptions, state: State, record: Callable[[dict[str, Any]], None]):
        self.options = options
        self.state = state
        self.record = record
        keys = {**options.extra_keys, options.access_key: options.secret_key}
        self.verifier = Verifier(keys, options.clock_skew_limit)
        self.quotas = {kind: QuotaBucket(rate) for kind, rate in (options.quotas or {}).items()}
        self.attempts: dict[RequestKey, int] = {}
        self.pacers: dict[object, Pacer] = {}
        self.receiver = Receiver(options.body_timeout)
        self.processing: dict[asyncio.Task[None], Job] = {}
        self.released = asyncio.Event()  # cleared: read sets stay PROCESSING_UPLOAD until it is set again
        self.released.set()
        self.ingesters = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-ingest")
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
            "GetSequenceStore": self.sequence_store,
        }
        self.handlers = handlers

    @property
    def threaded_writes(self) -> bool:
        return self.receiver.threaded_writes

    @threaded_writes.setter
    def threaded_writes(self, value: bool) -> None:
        self.receiver.threaded_writes = value

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

    async def close(self) -> None:
        for task, job in self.processing.items():
            job.cancelled.set()
            task.cancel()
        await asyncio.gather(*self.processing, return_exceptions=True)
        self.processing.clear()
        self.ingesters.shutdown(wait=True)
        self.receiver.close()

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
            unmatched = request.match_info.http_exception
            if unmatched is not None:
                if unmatched.status == 405:
                    raise ApiError("NotSupportedOperationException", f"{request.method} is not an operation here")
                raise ApiError("UnknownOperationException", "no operation at this path", 404)
            response = await handler(request)
            status = response.status
            return response
        except ApiError as err:
            status, code = err.status, err.code
            return error_response(err, close=not call.body_done and self.has_body(request))
        except web.HTTPException as exc:  # a limit of aiohttp's, met while reading
            limit = for_status(exc.status, exc.reason)
            status, code = limit.status, limit.code
            return error_response(limit, close=True)
        except ConnectionDropped:
            call.reset = True
            return web.Response(status=500)
        except (ConnectionError, asyncio.CancelledError):
            call.reset = True
            raise
        except Exception:
            LOG.exception("unhandled error in %s", call.operation)
            bug = ApiError("InternalServerException", "internal error of the local store")
            status, code = bug.status, bug.code
            return error_response(bug, close=True)
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

    @staticmethod
    def has_body(request: web.Request) -> bool:
        return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        call = request[CALL]
        info = request.match_info
        content_hash = request.headers.get("x-amz-content-sha256")
        # Authentication first, from the headers alone, before any body byte is read: a signature over
        # x-amz-content-sha256 (UNSIGNED-PAYLOAD or a declared hash) is checked in full; one over the body
        # itself in everything but that hash, and in full once the body is in.
        if content_hash is None:
            self.verifier.check_headers(request.headers, time.time() + self.options.clock_offset)
        else:
            self.verify(request, content_hash)
        call.store_id = check_id(info["store"], "sequenceStoreId")
        known = self.options.store_ids
        if known is not None and call.store_id not in known:
            raise not_found(f"Sequence store {call.store_id} not found")
        if "upload" in info:
            call.upload_id = check_id(info["upload"], "uploadId")
        if "readset" in info:
            call.read_set_id = check_id(info["readset"], "id")
        if call.operation in ("UploadReadSetPart", "GetReadSet"):
            # Known before any fault is drawn, so each part (of an upload, of a read set's file) has its own draws.
            upload = call.operation == "UploadReadSetPart"
            call.source = request.query.get("partSource") if upload else request.query.get("file", "SOURCE1")
            number = request.query.get("partNumber", "")
            call.part_number = int(number) if number.isascii() and number.isdigit() and len(number) < 9 else None
        if call.operation != "UploadReadSetPart":
            call.body = await self.read_json_body(request, content_hash)
        self.check_quota(call)
        self.inject_fault(request, call)
        return await self.handlers[call.operation](request, call)

    async def read_json_body(self, request: web.Request, sent: str | None) -> bytes:
        body = await read_bounded(request, MAX_JSON_BODY, self.options.body_timeout)
        request[CALL].body_done = True
        digest = hashlib.sha256(body).hexdigest()
        if sent is None:
            self.verify(request, digest)
        elif sent not in (UNSIGNED_PAYLOAD, digest):
            raise validation("x-amz-content-sha256 does not match the request body")
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
        if not options.active or not options.applies_to(call.operation):
            return
        key = self.request_key(call)
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

    def request_key(self, call: Call) -> RequestKey:
        """The request's stable identity: an upload's id stands for the upload's fields, never for a random draw."""
        store_id = call.store_id or ""
        if call.operation == "CreateMultipartReadSetUpload":
            try:
                body: object = json.loads(call.body)
            except ValueError:
                body = call.body.hex()
            upload = create_identity(store_id, body)
        elif call.upload_id:
            upload = self.state.upload_identity(store_id, call.upload_id)
        elif call.read_set_id:
            upload = self.state.read_set_identity(store_id, call.read_set_id)
        else:
            upload = ""
        return RequestKey(call.operation, store_id, upload, call.source or "", call.part_number or 0)

    def drop(self, request: web.Request, call: Call) -> None:
        call.reset = True
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionDropped()

    def json(self, request: web.Request) -> dict[str, Any]:
        return json_object(request[CALL].body)

    # --- operations
    async def create_upload(self, request: web.Request, call: Call) -> web.StreamResponse:
        reply = self.state.create_upload(request.match_info["store"], self.json(request))
        call.upload_id = reply["uploadId"]
        return web.json_response(reply)

    async def upload_part(self, request: web.Request, call: Call) -> web.StreamResponse:
        upload = self.state.upload(request.match_info["store"], request.match_info["upload"])
        source = check_source(request.query.get("partSource"))
        number = check_part_number(request.query.get("partNumber", ""))
        length = self.part_length(request, source, upload.fields["sourceFileType"])
        sent_hash = request.headers.get("x-amz-content-sha256")
        want_sha = wants_body_sha256(sent_hash, self.options.hash_parts)
        tmp = self.state.part_tmp_path(upload, source, number)

        def drop(received: int) -> None:
            call.nbytes = received
            self.drop(request, call)

        try:
            received, digest, sha = await self.receiver.receive(
                request, tmp, want_sha, self.pacer(request), call.reset_at, drop
            )
        finally:
            call.body_done = True
        call.nbytes = received
        try:
            self.check_part_body(request, received, length, sent_hash, sha)
            checksum = self.state.put_part(upload, source, number, size=received, digest=digest, tmp=tmp)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return web.json_response({"checksum": checksum})

    def part_length(self, request: web.Request, source: str, file_type: str) -> int:
        """A part's Content-Length, once the source, the framing and the length are ones the service takes."""
        if source == "SOURCE2" and file_type != "FASTQ":
            raise validation(f"SOURCE2 is only allowed for FASTQ read sets, not {file_type}")
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            raise validation("chunked transfer encoding is not supported: send Content-Length")
        length = request.content_length
        if length is None:
            raise ApiError("ValidationException", "Content-Length is required", 411)
        if length == 0:
            raise validation("a part must not be empty")
        if length > self.options.max_part_size:
            raise validation(f"part size {length} exceeds the maximum of {self.options.max_part_size} bytes")
        return length

    def check_part_body(
        self, request: web.Request, received: int, length: int, sent_hash: str | None, sha: str
    ) -> None:
        """The body as received: all of it, and the SHA-256 signed (or declared in x-amz-content-sha256)."""
        if received != length:
            raise validation(f"body ended after {received} of {length} bytes")
        if sent_hash is None:
            self.verify(request, sha)
        elif sent_hash not in (UNSIGNED_PAYLOAD, sha):  # a declared hash must be the body's
            raise validation("x-amz-content-sha256 does not match the request body")

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
        read_set, fresh = self.state.complete(info["store"], info["upload"], self.json(request))
        if fresh:
            directory = None if self.state.discard else self.state.read_set_dir(read_set.store_id, read_set.read_set_id)
            job = Job(
                file_type=read_set.fields["sourceFileType"],
                sources={
                    name: [part.path for part in parts if part.path is not None]
                    for name, parts in read_set.parts.items()
                },
                directory=directory,
                family=self.options.etag_family,
                corrupt_etag=self.options.faults.corrupt_etag,
            )
            task = asyncio.get_running_loop().create_task(self.process(read_set, job))
            self.processing[task] = job
            task.add_done_callback(lambda done: self.processing.pop(done, None))
        return web.json_response({"readSetId": read_set.read_set_id})

    async def process(self, read_set: ReadSet, job: Job) -> None:
        """PROCESSING_UPLOAD for at least ``processing_delay`` seconds (and the read set's size at ``ingest_mbps``),
        and until the worker thread is done."""
        loop = asyncio.get_running_loop()
        least = self.options.processing_delay
        if self.options.ingest_mbps:
            size = sum(stored.length for stored in read_set.files.values())
            least = max(least, size / (self.options.ingest_mbps * 1e6))
        done_by = loop.time() + least
        try:
            outcome = await loop.run_in_executor(self.ingesters, ingest, job)
        except Cancelled:
            return
        except OSError as exc:  # the disk under the store, not the read set
            LOG.error("processing read set %s failed: %s", read_set.read_set_id, exc)
            outcome = Outcome(problem=f"the local store could not store the read set: {exc.strerror or exc}")
        await asyncio.sleep(max(0.0, done_by - loop.time()))
        await self.released.wait()
        read_set.finish(outcome)

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

    async def sequence_store(self, request: web.Request, call: Call) -> web.StreamResponse:
        store = self.state.store(request.match_info["store"])
        return web.json_response(
            {
                "id": store.store_id,
                "arn": f"arn:aws:omics:us-east-1:123456789012:sequenceStore/{store.store_id}",
                "name": f"local store {store.store_id}",
                "creationTime": iso(store.created),
                "eTagAlgorithmFamily": self.options.etag_family,
                "status": "ACTIVE",
            }
        )

    async def metadata(self, request: web.Request, call: Call) -> web.StreamResponse:
        read_set = self.state.read_set(request.match_info["store"], request.match_info["readset"])
        return web.json_response(read_set.metadata())

    async def get_read_set(self, request: web.Request, call: Call) -> web.StreamResponse:
        read_set = self.state.read_set(request.match_info["store"], request.match_info["readset"])
        name = check_source(request.query.get("file", "SOURCE1"), "file", ("SOURCE1", "SOURCE2", "INDEX"))
        number = check_part_number(request.query.get("partNumber", ""))
        call.source, call.part_number = name, number
        if read_set.status != "ACTIVE":
            raise validation(f"read set {read_set.read_set_id} is {read_set.status}, not ACTIVE")
        stored, offset, length = self.state.stored_file(read_set, name, number)
        if stored.path is None:
            raise ApiError(
                "ResourceNotFoundException",
                "this store runs with --discard: it counted and hashed the bytes but kept none to return",
            )
        call.nbytes = length
        return await send_slice(request, stored.path, offset, length)


__all__ = ["CHUNK", "ROUTES", "StoreApp", "iso"]
