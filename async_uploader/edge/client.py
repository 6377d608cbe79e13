"""One async method per sequence-store operation: build (protocol) → sign (signing) → send (transport) → parse.

No retries here: each method makes one request (listings one per page) and raises the ``ServiceError``
subclass the service named, or ``TransportError``; the engine decides what to retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..core import protocol
from ..core.config import ReadSet, ServiceConfig, Source, env_region
from ..core.errors import ConfigError, UnavailableError
from ..core.protocol import (
    CompletedPart,
    CreatedUpload,
    Endpoint,
    HttpRequest,
    ListedPart,
    ReadSetMetadata,
    UploadSummary,
)
from .signing import CredentialSource, Signer, session_region
from .transport import AiohttpTransport, BodySource, Response, Transport

__all__ = ["DEFAULT_LOCAL_REGION", "OmicsClient", "resolve_region"]

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
    def from_config(cls, service: ServiceConfig, limit: int = 100) -> OmicsClient:
        """A client with an aiohttp transport of ``limit`` connections and credentials from botocore's chain."""
        region = resolve_region(service)
        signer = Signer(CredentialSource(service.profile), region)
        transport = AiohttpTransport(
            limit=limit,
            connect_timeout=service.connect_timeout,
            read_timeout=service.read_timeout,
            verify_tls=service.verify_tls,
        )
        return cls(service, transport=transport, signer=signer)

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
        headers = self.signer.sign(
            request.method, url, dict(request.headers), request.body, unsigned_payload=body is not None
        )
        response = await self.transport.send(request.method, url, headers, body if body is not None else request.body)
        if not 200 <= response.status < 300:
            raise protocol.error_from_response(request.operation, response.status, response.headers, response.body)
        return response

    async def probe(self) -> int:
        """An unsigned GET of the control endpoint's root: any HTTP answer (its status) proves it is reachable."""
        response = await self.transport.send("GET", self.base_url() + "/", {}, b"")
        return response.status

    async def aclose(self) -> None:
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
