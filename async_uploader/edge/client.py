"""One async method per sequence-store operation: build (protocol) → sign (signing) → send (transport) → parse.

No retries here: each method makes one request (listings one per page) and raises the ``ServiceError``
subclass the service named, or ``TransportError``; the engine decides what to retry.

A signature refused as expired while the service's Date is minutes away from this machine's clock is
``ClockSkewError``: the signer's clock is corrected by the measured offset once (a warning says by how much) and
the error is retryable; refused again after that, it is not. With ``--debug`` every request is one log line:
method, operation, status, bytes sent and received, seconds, attempt (never a header, so never a credential).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping, Sequence

import anyio

from ..core import protocol
from ..core.clock import describe_skew, skew_offset
from ..core.config import ReadSet, ServiceConfig, Source, env_region
from ..core.errors import AccessDeniedError, ClockSkewError, ConfigError, ServiceError, UnavailableError, UploaderError
from ..core.protocol import (
    CompletedPart,
    CreatedUpload,
    Endpoint,
    HttpRequest,
    ListedPart,
    ReadSetMetadata,
    UploadSummary,
)
from .awsconfig import resolve_service
from .messages import OPERATION
from .signing import CredentialSource, Signer, botocore_session, session_region
from .transport import BodySource, HttpTransport, Response, Transport
from .workers import WorkerTransport

__all__ = ["ATTEMPT", "DEFAULT_LOCAL_REGION", "OmicsClient", "resolve_region", "resolve_service_and_credentials"]

log = logging.getLogger("async_uploader")

ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("async_uploader_attempt", default=1)
"""The try of the request being sent (set by the engine's retry loop), for the debug lines."""
_SKEW_CORRECTED = 60.0
"""A measured offset within this many seconds of the one already applied means the correction did not help."""

DEFAULT_LOCAL_REGION = "us-east-1"
"""The region signed for when a local endpoint is used and no region is configured."""


def resolve_region(service: ServiceConfig) -> str:
    """``service.region``, else AWS_REGION / AWS_DEFAULT_REGION / the profile's region.

    With ``endpoint_url`` set and nothing configured, us-east-1; against the real service a region is required.
    """
    region = service.region or env_region() or session_region(service.profile)
    if region:
        return region
    if service.endpoint_url is not None:
        return DEFAULT_LOCAL_REGION
    raise ConfigError("no AWS region configured: pass --region, or set AWS_REGION or a profile region")


def resolve_service_and_credentials(service: ServiceConfig) -> tuple[ServiceConfig, CredentialSource]:
    """``resolve_service`` and the credential chain of ``service.profile``, read through one botocore session (making
    one costs some 6 ms of CPU). This may block (a credential_process): on an event loop, in a worker thread."""
    session = botocore_session(service.profile)
    return resolve_service(service, session), CredentialSource.resolved(service.profile, session)


def _check_progress(operation: str, token: str, seen: set[str]) -> None:
    if token in seen:
        raise UnavailableError("the listing returned a page token twice", code="InvalidResponse", operation=operation)
    seen.add(token)


class OmicsClient:
    """The sequence-store operations the uploader needs, over one transport, every request signed."""

    def __init__(self, service: ServiceConfig, *, transport: Transport, signer: Signer) -> None:
        self.service = service
        self.transport = transport
        self.signer = signer
        self._base = service.endpoint_url.rstrip("/") if service.endpoint_url else None

    @classmethod
    def from_config(cls, service: ServiceConfig, limit: int = 100, workers: int = 1) -> OmicsClient:
        """A client with an HTTP transport of ``limit`` connections (in each of ``workers`` event loops,
        ``edge.workers``) and credentials from botocore's chain.

        Unset settings come from botocore's configuration (``edge.awsconfig``). Resolving credentials may
        block (a credential_process): on an event loop use ``await OmicsClient.open(...)``.
        """
        service = resolve_service(service)
        return cls._build(service, CredentialSource(service.profile), limit, workers)

    @classmethod
    async def open(cls, service: ServiceConfig, limit: int = 100, workers: int = 1) -> OmicsClient:
        """``from_config`` with the configuration and the credential chain resolved in a worker thread."""
        resolve = resolve_service_and_credentials
        service, credentials = await anyio.to_thread.run_sync(resolve, service, abandon_on_cancel=True)
        return cls._build(service, credentials, limit, workers)

    @classmethod
    def _build(cls, service: ServiceConfig, credentials: CredentialSource, limit: int, workers: int) -> OmicsClient:
        def build() -> HttpTransport:
            return HttpTransport(
                limit=limit,
                connect_timeout=service.connect_timeout,
                read_timeout=service.read_timeout,
                verify_tls=service.verify_tls,
                ca_bundle=service.ca_bundle,
                proxy_ca_bundle=service.proxy_ca_bundle,
            )

        transport: Transport = build() if workers <= 1 else WorkerTransport.make(workers, build)
        return cls(service, transport=transport, signer=Signer(credentials, resolve_region(service)))

    @property
    def region(self) -> str:
        return self.signer.region

    def base_url(self, endpoint: Endpoint = Endpoint.CONTROL) -> str:
        """The local endpoint (no host prefix), or the real storage/control-storage host over HTTPS."""
        return self._base or f"https://{endpoint.host(self.signer.region)}"

    def url_for(self, request: HttpRequest) -> str:
        """The full URL of ``request``, exactly as it is signed and sent."""
        url = self.base_url(request.endpoint) + request.path
        if request.query:
            url += "?" + request.query_string
        return url

    async def _send(self, request: HttpRequest, body: BodySource | None = None) -> Response:
        url = self.url_for(request)
        credentials = await self.signer.credentials.fresh()
        headers = self.signer.sign(
            request.method,
            url,
            dict(request.headers),
            request.body,
            unsigned_payload=body is not None,
            credentials=credentials,
        )
        signed_with = self.signer.clock_offset
        size = body.length if body is not None else len(request.body)
        response = await self._timed(request.method, request.operation, url, headers, body or request.body, size)
        if not 200 <= response.status < 300:
            error = protocol.error_from_response(request.operation, response.status, response.headers, response.body)
            raise self._skewed(error, response, signed_with) or error
        return response

    async def _timed(
        self, method: str, operation: str, url: str, headers: Mapping[str, str], body: bytes | BodySource, size: int
    ) -> Response:
        """Send one request (its operation sets the most its answer may hold: ``edge.messages.OPERATION``); with
        debug logging on, one line about it (whatever its outcome)."""
        token = OPERATION.set(operation)
        try:
            return await self._logged(method, operation, url, headers, body, size)
        finally:
            OPERATION.reset(token)

    async def _logged(
        self, method: str, operation: str, url: str, headers: Mapping[str, str], body: bytes | BodySource, size: int
    ) -> Response:
        if not log.isEnabledFor(logging.DEBUG):
            return await self.transport.send(method, url, headers, body)
        started = time.monotonic()
        outcome = "failed"
        try:
            response = await self.transport.send(method, url, headers, body)
            outcome = f"{response.status}, {len(response.body)} bytes back"
            return response
        except UploaderError as exc:
            outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            seconds = time.monotonic() - started
            log.debug(
                "%s %s %s, %d bytes, %.3f s, attempt %d", method, operation, outcome, size, seconds, ATTEMPT.get()
            )

    def _skewed(self, error: ServiceError, response: Response, signed_with: float) -> ClockSkewError | None:
        """A ClockSkewError when this refusal is a skewed clock's doing; corrects the signing clock once.

        ``signed_with`` is the offset the refused request was signed with: a request signed before a correction
        another request made is simply retryable; one signed with the correction and refused again is not.
        """
        if not isinstance(error, AccessDeniedError):
            return None
        offset = skew_offset(error.code, error.message, response.headers, time.time())
        if offset is None:
            return None
        applied = self.signer.clock_offset
        what = describe_skew(offset)
        if signed_with != applied:  # corrected meanwhile, by another request's refusal
            return ClockSkewError(f"{what}: {error.message}", offset=offset, retryable=True, operation=error.operation)
        if applied and abs(offset - applied) < _SKEW_CORRECTED:
            message = f"{what}, and a signature corrected for that was refused too ({error.message}); set the clock"
            return ClockSkewError(message, offset=offset, retryable=False, operation=error.operation)
        self.signer.clock_offset = offset
        log.warning("%s: signing with the service's time from now on (set the clock: NTP)", what)
        return ClockSkewError(f"{what}: {error.message}", offset=offset, retryable=True, operation=error.operation)

    def proxy_for(self, url: str) -> str | None:
        """The proxy (shown without its password) that requests to ``url`` take, if the transport knows one."""
        chooser = getattr(self.transport, "proxy_for", None)
        proxy = chooser(url) if chooser is not None else None
        return str(proxy.shown) if proxy is not None else None

    async def probe(self) -> int:
        """An unsigned GET of the control endpoint's root: any HTTP answer (its status) proves it is reachable."""
        response = await self._timed("GET", "probe", self.base_url() + "/", {}, b"", 0)
        return response.status

    async def aclose(self) -> None:
        await self.signer.credentials.aclose()
        await self.transport.aclose()

    async def __aenter__(self) -> OmicsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Operations ---------------------------------------------------------------------------------------------

    async def create_upload(self, store_id: str, read_set: ReadSet, client_token: str) -> CreatedUpload:
        response = await self._send(protocol.create_upload(store_id, read_set, client_token))
        return protocol.parse_create(response.body)

    async def upload_part(self, store_id: str, upload_id: str, source: Source, number: int, body: BodySource) -> str:
        """Stream one part; returns the store's checksum for it, to be handed back verbatim on Complete."""
        request = protocol.upload_part(store_id, upload_id, source, number, body.length)
        response = await self._send(request, body)
        return protocol.parse_part(response.body)

    async def complete_upload(
        self, store_id: str, upload_id: str, parts: Sequence[CompletedPart | tuple[Source, int, str]]
    ) -> str:
        """Complete with every part (sorted here); returns the new read set's id."""
        response = await self._send(protocol.complete_upload(store_id, upload_id, parts))
        return protocol.parse_complete(response.body)

    async def abort_upload(self, store_id: str, upload_id: str) -> None:
        await self._send(protocol.abort_upload(store_id, upload_id))

    async def list_parts(
        self, store_id: str, upload_id: str, source: Source, max_results: int | None = None
    ) -> list[ListedPart]:
        """Every part the store holds for one source of an upload, following nextToken across pages."""
        found: list[ListedPart] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = protocol.list_parts(store_id, upload_id, source, max_results, token)
            page, token = protocol.parse_list_parts((await self._send(request)).body)
            found.extend(page)
            if token is None:
                return found
            _check_progress(request.operation, token, seen)

    async def list_uploads(self, store_id: str, max_results: int | None = None) -> list[UploadSummary]:
        """Every in-progress upload of a store, following nextToken across pages."""
        found: list[UploadSummary] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = protocol.list_uploads(store_id, max_results, token)
            page, token = protocol.parse_list_uploads((await self._send(request)).body)
            found.extend(page)
            if token is None:
                return found
            _check_progress(request.operation, token, seen)

    async def find_read_sets(self, store_id: str, read_set_filter: Mapping[str, str]) -> list[ReadSetMetadata]:
        """Every read set of a store matching a ListReadSets filter, following nextToken across pages."""
        found: list[ReadSetMetadata] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = protocol.list_read_sets(store_id, read_set_filter, None, token)
            page, token = protocol.parse_list_read_sets((await self._send(request)).body)
            found.extend(page)
            if token is None:
                return found
            _check_progress(request.operation, token, seen)

    async def get_etag_family(self, store_id: str) -> str | None:
        """GetSequenceStore: the family of ETag algorithms the store was created with."""
        response = await self._send(protocol.get_sequence_store(store_id))
        return protocol.parse_sequence_store(response.body)

    async def get_read_set_metadata(self, store_id: str, read_set_id: str) -> ReadSetMetadata:
        response = await self._send(protocol.get_read_set_metadata(store_id, read_set_id))
        return protocol.parse_metadata(response.body)

    async def download_part(self, store_id: str, read_set_id: str, source: Source, number: int) -> bytes:
        """GetReadSet: the bytes of one part of a completed read set's source."""
        response = await self._send(protocol.get_read_set(store_id, read_set_id, source, number))
        return response.body

    async def list_read_sets_page(
        self,
        store_id: str,
        read_set_filter: Mapping[str, str],
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> tuple[list[ReadSetMetadata], str | None]:
        """One page of ListReadSets: the read sets on it and the token of the next page (None after the last)."""
        request = protocol.list_read_sets(store_id, read_set_filter, max_results, next_token)
        return protocol.parse_list_read_sets((await self._send(request)).body)
