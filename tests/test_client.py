"""client.py through the mock transport: URLs and hosts, signing, pagination, error mapping, no retries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from async_uploader.core import errors, protocol
from async_uploader.core.config import FileType, ReadSet, ServiceConfig, Source
from async_uploader.edge.client import OmicsClient, resolve_region
from async_uploader.edge.messages import OPERATION, cap_for
from async_uploader.edge.signing import CredentialSource, Signer
from async_uploader.edge.transport import HttpTransport, MockTransport, Response, SentRequest

STORE = "1234567890"
UPLOAD = "9876543210"


def make_client(
    handler: Callable[[SentRequest], Response], service: ServiceConfig | None = None
) -> tuple[OmicsClient, MockTransport]:
    service = service or ServiceConfig(region="eu-central-1")
    transport = MockTransport(handler)
    signer = Signer(CredentialSource.static("AKIDTEST", "secret"), service.region or "us-east-1")
    return OmicsClient(service, transport=transport, signer=signer), transport


def ok(body: object) -> Callable[[SentRequest], Response]:
    data = json.dumps(body).encode()
    return lambda _: Response(200, {"Content-Type": "application/json"}, data)


def read_set() -> ReadSet:
    return ReadSet(source1=Path("a.fq.gz"), file_type=FileType.FASTQ, subject_id="s", sample_id="x", name="n")


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    async def slices(self) -> AsyncIterator[bytes | memoryview]:
        yield memoryview(self.data)


async def test_real_endpoints_per_operation() -> None:
    reply = {
        "uploadId": UPLOAD,
        "checksum": "c",
        "readSetId": "4444444444",
        "parts": [],
        "uploads": [],
        "id": "4444444444",
        "status": "ACTIVE",
    }
    client, transport = make_client(ok(reply))
    await client.create_upload(STORE, read_set(), "tok")
    await client.upload_part(STORE, UPLOAD, Source.SOURCE1, 1, Body(b"abc"))
    await client.complete_upload(STORE, UPLOAD, [(Source.SOURCE1, 1, "c")])
    await client.abort_upload(STORE, UPLOAD)
    await client.list_parts(STORE, UPLOAD, Source.SOURCE2)
    await client.list_uploads(STORE)
    await client.get_read_set_metadata(STORE, "4444444444")
    await client.download_part(STORE, "4444444444", Source.SOURCE2, 3)
    control = "https://control-storage-omics.eu-central-1.amazonaws.com"
    storage = "https://storage-omics.eu-central-1.amazonaws.com"
    assert [(r.method, r.url) for r in transport.requests] == [
        ("POST", f"{control}/sequencestore/{STORE}/upload"),
        ("PUT", f"{storage}/sequencestore/{STORE}/upload/{UPLOAD}/part?partSource=SOURCE1&partNumber=1"),
        ("POST", f"{storage}/sequencestore/{STORE}/upload/{UPLOAD}/complete"),
        ("DELETE", f"{control}/sequencestore/{STORE}/upload/{UPLOAD}/abort"),
        ("POST", f"{control}/sequencestore/{STORE}/upload/{UPLOAD}/parts"),
        ("POST", f"{control}/sequencestore/{STORE}/uploads"),
        ("GET", f"{control}/sequencestore/{STORE}/readset/4444444444/metadata"),
        ("GET", f"{storage}/sequencestore/{STORE}/readset/4444444444?file=SOURCE2&partNumber=3"),
    ]
    for request in transport.requests:
        authorization = request.header("Authorization") or ""
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
        assert "/eu-central-1/omics/aws4_request" in authorization
        assert request.header("X-Amz-Date")
        assert "secret" not in json.dumps(dict(request.headers))
    part = transport.requests[1]
    assert part.body == b"abc" and part.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    assert transport.requests[0].header("x-amz-content-sha256") is None
    assert transport.requests[0].header("Content-Type") == "application/json"
    assert json.loads(transport.requests[4].body) == {"partSource": "SOURCE2"}


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/sequencestore/1234567890/uploads"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/sequencestore/1234567890/uploads"),
        ("https://proxy.example/omics/", "https://proxy.example/omics/sequencestore/1234567890/uploads"),
    ],
)
async def test_endpoint_url_has_no_host_prefix(endpoint: str, expected: str) -> None:
    client, transport = make_client(ok({"uploads": []}), ServiceConfig(endpoint_url=endpoint))
    assert await client.list_uploads(STORE) == []
    assert transport.requests[0].url == expected
    assert "storage" not in transport.requests[0].url


async def test_list_parts_follows_every_page() -> None:
    pages = {
        None: {
            "parts": [{"partNumber": 1, "partSize": 5, "partSource": "SOURCE1", "checksum": "a"}],
            "nextToken": "t/1+",
        },
        "t/1+": {"parts": [], "nextToken": "t 2="},
        "t 2=": {"parts": [{"partNumber": 2, "partSize": 5, "partSource": "SOURCE1", "checksum": "b"}]},
    }

    def handler(request: SentRequest) -> Response:
        query = dict(parse_qsl(urlsplit(request.url).query))
        return Response(200, {}, json.dumps(pages[query.get("nextToken")]).encode())

    client, transport = make_client(handler)
    parts = await client.list_parts(STORE, UPLOAD, Source.SOURCE1, max_results=1)
    assert [(p.number, p.checksum) for p in parts] == [(1, "a"), (2, "b")]
    queries = [urlsplit(r.url).query for r in transport.requests]
    assert queries == ["maxResults=1", "maxResults=1&nextToken=t%2F1%2B", "maxResults=1&nextToken=t%202%3D"]


async def test_list_uploads_follows_every_page() -> None:
    def upload(n: int) -> dict[str, str]:
        return {"sequenceStoreId": STORE, "uploadId": f"{n:010d}", "name": f"u{n}"}

    def handler(request: SentRequest) -> Response:
        token = dict(parse_qsl(urlsplit(request.url).query)).get("nextToken")
        page = int(token or 0)
        body: dict[str, object] = {"uploads": [upload(page * 2), upload(page * 2 + 1)]}
        if page < 2:
            body["nextToken"] = str(page + 1)
        return Response(200, {}, json.dumps(body).encode())

    client, transport = make_client(handler)
    uploads = await client.list_uploads(STORE)
    assert [u.name for u in uploads] == [f"u{n}" for n in range(6)]
    assert len(transport.requests) == 3


async def test_listing_that_repeats_a_token_stops() -> None:
    client, _ = make_client(ok({"uploads": [], "nextToken": "same"}))
    with pytest.raises(errors.UnavailableError, match="page token twice"):
        await client.list_uploads(STORE)


@pytest.mark.parametrize(
    ("status", "headers", "body", "cls"),
    [
        (429, {"x-amzn-ErrorType": "ThrottlingException"}, b'{"message": "Rate exceeded"}', errors.ThrottlingError),
        (403, {"X-Amzn-ErrorType": "AccessDeniedException:http://x"}, b"{}", errors.AccessDeniedError),
        (404, {}, b'{"__type": "ResourceNotFoundException", "message": "gone"}', errors.ResourceNotFoundError),
        (503, {"Content-Type": "text/html"}, b"<html>Service Unavailable</html>", errors.UnavailableError),
        (500, {}, b"", errors.InternalServerError),
    ],
)
async def test_errors_are_mapped_and_not_retried(
    status: int, headers: dict[str, str], body: bytes, cls: type[errors.ServiceError]
) -> None:
    client, transport = make_client(lambda _: Response(status, headers, body))
    with pytest.raises(cls) as caught:
        await client.upload_part(STORE, UPLOAD, Source.SOURCE2, 9, Body(b"x"))
    assert type(caught.value) is cls
    assert caught.value.status == status and caught.value.operation == "UploadReadSetPart"
    assert len(transport.requests) == 1


async def test_transport_errors_propagate_unchanged() -> None:
    def handler(_: SentRequest) -> Response:
        raise errors.TransportError("PUT storage-omics.x:443: connection reset by peer")

    client, transport = make_client(handler)
    with pytest.raises(errors.TransportError, match="reset"):
        await client.create_upload(STORE, read_set(), "tok")
    assert len(transport.requests) == 1


async def test_results_are_parsed() -> None:
    client, _ = make_client(ok({"uploadId": UPLOAD, "creationTime": "2024-01-01T00:00:00Z"}))
    created = await client.create_upload(STORE, read_set(), "tok")
    assert (created.upload_id, created.creation_time) == (UPLOAD, "2024-01-01T00:00:00Z")
    client, _ = make_client(ok({"readSetId": "7777777777"}))
    assert await client.complete_upload(STORE, UPLOAD, []) == "7777777777"
    client, _ = make_client(lambda _: Response(200, {}, b"\x00raw bytes\xff"))
    assert await client.download_part(STORE, "7777777777", Source.SOURCE1, 1) == b"\x00raw bytes\xff"
    client, _ = make_client(ok({"id": "7777777777", "status": "UPLOAD_FAILED", "statusMessage": "bad"}))
    meta = await client.get_read_set_metadata(STORE, "7777777777")
    assert (meta.status, meta.status_message) == ("UPLOAD_FAILED", "bad")
    async with client:
        pass
    assert client.transport.closed  # type: ignore[attr-defined]


# Building from configuration -------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    return monkeypatch


def test_region_resolution(aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_region(ServiceConfig(region="ap-south-1")) == "ap-south-1"
    assert resolve_region(ServiceConfig(endpoint_url="http://127.0.0.1:1")) == "us-east-1"
    with pytest.raises(errors.ConfigError, match="--region"):
        resolve_region(ServiceConfig())
    (tmp_path / "config").write_text("[profile lab]\nregion = eu-north-1\n", encoding="utf-8")
    assert resolve_region(ServiceConfig(profile="lab")) == "eu-north-1"
    aws_env.setenv("AWS_DEFAULT_REGION", "us-west-1")
    assert resolve_region(ServiceConfig()) == "us-west-1"
    aws_env.setenv("AWS_REGION", "us-east-2")
    assert resolve_region(ServiceConfig(endpoint_url="http://127.0.0.1:1")) == "us-east-2"
    assert resolve_region(ServiceConfig(region="ca-central-1")) == "ca-central-1"


async def test_from_config_builds_an_http_transport(aws_env: pytest.MonkeyPatch) -> None:
    service = ServiceConfig(region="us-west-2", connect_timeout=3, read_timeout=7, verify_tls=False)
    client = OmicsClient.from_config(service, limit=12)
    assert isinstance(client.transport, HttpTransport)
    assert (client.transport.limit, client.transport.connect_timeout, client.transport.read_timeout) == (12, 3, 7)
    assert client.transport.verify_tls is False
    assert client.region == "us-west-2"
    assert client.signer.credentials.access_key == "AKIDENV"
    assert "envsecret" not in repr(client.signer)
    await client.aclose()


def test_from_config_without_credentials(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(errors.CredentialsError):
        OmicsClient.from_config(ServiceConfig(endpoint_url="http://127.0.0.1:1"), limit=1)


async def test_each_request_is_sent_as_its_operation_so_its_answer_is_capped_for_it() -> None:
    """The transport learns the operation of each request (``OPERATION``), hence the most its answer may hold."""
    seen: list[tuple[str, int, int]] = []
    reply = json.dumps({"uploadId": UPLOAD, "checksum": "c", "parts": [], "uploads": []}).encode()

    def handler(request: SentRequest) -> Response:
        seen.append((OPERATION.get(), cap_for(200), cap_for(500)))
        return Response(200, {}, reply)

    client, _ = make_client(handler)
    await client.create_upload(STORE, read_set(), "tok")
    await client.upload_part(STORE, UPLOAD, Source.SOURCE1, 1, Body(b"x"))
    await client.list_parts(STORE, UPLOAD, Source.SOURCE1)
    await client.probe()
    assert seen == [
        ("CreateMultipartReadSetUpload", 64 * 1024, 64 * 1024),
        ("UploadReadSetPart", 64 * 1024, 64 * 1024),
        ("ListReadSetUploadParts", 4 * 1024 * 1024, 64 * 1024),
        ("probe", 1024 * 1024, 64 * 1024),
    ]
    assert OPERATION.get() == ""  # reset after each request
    assert {protocol.answer_limit(name, 200) for name in protocol.OPERATIONS} >= {64 * 1024, 4 * 1024 * 1024}
    assert protocol.answer_limit("GetReadSet", 200) > 100 * 1024 * 1024  # one whole part
