"""signing.py: signatures equal to botocore's own omics client, credentials from the chain, no secret leaks."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.credentials
import botocore.exceptions
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse

from async_uploader.core import errors, protocol
from async_uploader.core.config import FileType, ReadSet, ServiceConfig, Source
from async_uploader.edge.client import OmicsClient
from async_uploader.edge.signing import CredentialSource, Signer
from async_uploader.edge.transport import MockTransport, Response, SentRequest

ACCESS = "AKIDEXAMPLE7Q2ZJ5WQ"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzzSECRETzz"
TOKEN = "IQoJb3JpZ2luX2VjTOKENzzTOKENVALUEzz"
REGION = "us-west-2"
STORE = "1234567890"
UPLOAD = "9876543210"
FIXED = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


@pytest.fixture
def fixed_clock() -> Iterator[None]:
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED):
        yield


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def botocore_sent(operation: str, params: dict[str, Any], reply: bytes = b"{}") -> Any:
    """The request botocore's own omics client sends for ``params`` (captured at before-send)."""
    session = botocore.session.Session()
    session.set_credentials(ACCESS, SECRET, TOKEN)
    client = session.create_client("omics", region_name=REGION)
    captured: list[Any] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {}, _Raw(reply))  # type: ignore[arg-type]

    client.meta.events.register("before-send.omics", before_send)  # type: ignore[arg-type]
    method = {v: k for k, v in client.meta.method_to_api_mapping.items()}[operation]
    getattr(client, method)(**params)
    client.close()
    return captured[0]


def header(request: Any, name: str) -> str:
    value = request.headers[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def our_client(reply: bytes = b"{}") -> tuple[OmicsClient, MockTransport]:
    transport = MockTransport(lambda _: Response(200, {}, reply))
    signer = Signer(CredentialSource.static(ACCESS, SECRET, TOKEN), REGION)
    return OmicsClient(ServiceConfig(region=REGION), transport=transport, signer=signer), transport


def read_set() -> ReadSet:
    return ReadSet(
        source1=Path("a.fastq.gz"),
        file_type=FileType.FASTQ,
        subject_id="subj",
        sample_id="samp",
        name="my run",
        description="d",
        tags={"k": "v w"},
    )


async def test_create_signature_equals_botocore_client(fixed_clock: None) -> None:
    params = {
        "sequenceStoreId": STORE,
        "clientToken": "tok-1",
        "sourceFileType": "FASTQ",
        "subjectId": "subj",
        "sampleId": "samp",
        "name": "my run",
        "description": "d",
        "tags": {"k": "v w"},
    }
    theirs = botocore_sent("CreateMultipartReadSetUpload", params, b'{"uploadId": "1111111111"}')
    client, transport = our_client(b'{"uploadId": "1111111111"}')
    await client.create_upload(STORE, read_set(), "tok-1")
    ours = transport.requests[0]
    assert ours.url == theirs.url
    assert ours.body == theirs.body
    assert ours.header("Authorization") == header(theirs, "Authorization")
    assert ours.header("X-Amz-Date") == "20240506T070809Z"
    assert ours.header("X-Amz-Security-Token") == TOKEN


async def test_control_operations_signatures_equal_botocore_client(fixed_clock: None) -> None:
    token = "page/2+x= y"
    client, transport = our_client(b'{"parts": [], "uploads": [], "readSetId": "2222222222"}')
    cases: list[tuple[str, dict[str, Any]]] = [
        ("AbortMultipartReadSetUpload", {"sequenceStoreId": STORE, "uploadId": UPLOAD}),
        ("ListMultipartReadSetUploads", {"sequenceStoreId": STORE}),
        ("ListReadSetUploadParts", {"sequenceStoreId": STORE, "uploadId": UPLOAD, "partSource": "SOURCE2"}),
        (
            "CompleteMultipartReadSetUpload",
            {
                "sequenceStoreId": STORE,
                "uploadId": UPLOAD,
                "parts": [{"partNumber": 1, "partSource": "SOURCE1", "checksum": "c/1=="}],
            },
        ),
        ("GetReadSet", {"sequenceStoreId": STORE, "id": "3333333333", "file": "SOURCE1", "partNumber": 2}),
    ]
    await client.abort_upload(STORE, UPLOAD)
    await client.list_uploads(STORE)
    await client.list_parts(STORE, UPLOAD, Source.SOURCE2)
    await client.complete_upload(STORE, UPLOAD, [(Source.SOURCE1, 1, "c/1==")])
    await client.download_part(STORE, "3333333333", Source.SOURCE1, 2)
    for (operation, params), ours in zip(cases, transport.requests, strict=True):
        theirs = botocore_sent(operation, params, b'{"parts": [], "uploads": [], "readSetId": "2222222222"}')
        assert ours.url == theirs.url, operation
        assert ours.header("Authorization") == header(theirs, "Authorization"), operation

    # A page token needing escapes: our URL carries it encoded exactly as botocore's does, and signs the same.
    signer = Signer(CredentialSource.static(ACCESS, SECRET, TOKEN), REGION)
    params = {"sequenceStoreId": STORE, "maxResults": 5, "nextToken": token}
    theirs = botocore_sent("ListMultipartReadSetUploads", params, b'{"uploads": []}')
    url = client.url_for(protocol.list_uploads(STORE, 5, token))
    assert url == theirs.url
    signed = signer.sign("POST", url, {}, b"")
    assert signed["Authorization"] == header(theirs, "Authorization")


def reference_sigv4(method: str, url_path: str, query: str, headers: dict[str, str], payload_hash: str) -> str:
    """An independent SigV4 computation from the specification, for the part (unsigned payload) case."""
    names = sorted(k.lower() for k in headers)
    lowered = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    canonical = "\n".join(
        [
            method,
            url_path,
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{n}:{lowered[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    day = FIXED.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/omics/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", FIXED.strftime("%Y%m%dT%H%M%SZ"), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET}".encode()
    for part in (day, REGION, "omics", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={ACCESS}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"


async def test_part_signed_with_unsigned_payload(fixed_clock: None) -> None:
    class Body:
        length = 5

        async def slices(self) -> Any:
            yield b"hel"
            yield memoryview(b"lo")

    client, transport = our_client(b'{"checksum": "abc"}')
    assert await client.upload_part(STORE, UPLOAD, Source.SOURCE2, 7, Body()) == "abc"
    sent: SentRequest = transport.requests[0]
    assert sent.url == (
        f"https://storage-omics.{REGION}.amazonaws.com/sequencestore/{STORE}/upload/{UPLOAD}/part"
        "?partSource=SOURCE2&partNumber=7"
    )
    assert sent.body == b"hello"
    assert sent.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    signed_headers = {
        "host": f"storage-omics.{REGION}.amazonaws.com",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": "20240506T070809Z",
        "x-amz-security-token": TOKEN,
    }
    expected = reference_sigv4(
        "PUT",
        f"/sequencestore/{STORE}/upload/{UPLOAD}/part",
        "partSource=SOURCE2&partNumber=7",
        signed_headers,
        "UNSIGNED-PAYLOAD",
    )
    assert sent.header("Authorization") == expected


def test_json_body_is_hashed_into_signature(fixed_clock: None) -> None:
    signer = Signer(CredentialSource.static(ACCESS, SECRET), REGION)
    url = "https://control-storage-omics.us-west-2.amazonaws.com/sequencestore/1234567890/upload"
    one = signer.sign("POST", url, {"Content-Type": "application/json"}, b'{"a": 1}')
    two = signer.sign("POST", url, {"Content-Type": "application/json"}, b'{"a": 2}')
    assert one["Authorization"] != two["Authorization"]
    assert "X-Amz-Security-Token" not in one
    assert "X-Amz-Content-SHA256" not in one
    assert "SignedHeaders=content-type;host;x-amz-date," in one["Authorization"]


def test_local_endpoint_signs_host_with_port(fixed_clock: None) -> None:
    signer = Signer(CredentialSource.static(ACCESS, SECRET), REGION)
    headers = signer.sign("PUT", "http://127.0.0.1:8123/sequencestore/1/upload/2/part?a=b", {}, b"", True)
    expected = reference_sigv4(
        "PUT",
        "/sequencestore/1/upload/2/part",
        "a=b",
        {"host": "127.0.0.1:8123", "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": "20240506T070809Z"},
        "UNSIGNED-PAYLOAD",
    )
    assert headers["Authorization"] == expected


# Credentials -----------------------------------------------------------------------------------------------


@pytest.fixture
def empty_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_credentials_from_environment(empty_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    source = CredentialSource()
    assert source.access_key == ACCESS
    assert source.frozen().token == TOKEN
    for text in (repr(source), str(source), repr(Signer(source, REGION)), str(Signer(source, REGION))):
        assert SECRET not in text and TOKEN not in text
    assert "env" in repr(source)


def test_credentials_from_profile(empty_environment: None, tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        f"[lab]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n", encoding="utf-8"
    )
    source = CredentialSource("lab")
    assert source.access_key == ACCESS
    assert SECRET not in repr(source) and "lab" in repr(source)


def test_no_credentials_is_a_one_line_error(empty_environment: None) -> None:
    with pytest.raises(errors.CredentialsError) as caught:
        CredentialSource()
    message = str(caught.value)
    assert "\n" not in message and "AWS_ACCESS_KEY_ID" in message


def test_unknown_profile_is_a_credentials_error(empty_environment: None) -> None:
    with pytest.raises(errors.CredentialsError, match="'nope' was not found"):
        CredentialSource("nope")


def test_refreshable_credentials_are_refreshed_by_botocore(fixed_clock: None) -> None:
    calls: list[int] = []

    def refresh() -> dict[str, str]:
        calls.append(1)
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return {
            "access_key": f"AKIDREFRESHED{len(calls)}",
            "secret_key": SECRET,
            "token": TOKEN,
            "expiry_time": soon.isoformat(),
        }

    expiring = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        {"access_key": "AKIDOLD", "secret_key": SECRET, "token": TOKEN, "expiry_time": expiring.isoformat()},
        refresh_using=refresh,
        method="test-refresh",
    )
    signer = Signer(CredentialSource(credentials=credentials), REGION)
    headers = signer.sign("GET", "https://control-storage-omics.us-west-2.amazonaws.com/x", {}, b"")
    assert "Credential=AKIDREFRESHED1/" in headers["Authorization"]
    headers = signer.sign("GET", "https://control-storage-omics.us-west-2.amazonaws.com/x", {}, b"")
    assert "Credential=AKIDREFRESHED1/" in headers["Authorization"] and calls == [1]
    assert SECRET not in repr(signer) and TOKEN not in repr(signer)


def test_failed_refresh_is_a_credentials_error_without_secrets() -> None:
    def refresh() -> dict[str, str]:
        raise botocore.exceptions.CredentialRetrievalError(provider="sso", error_msg="expired token")

    expired = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        {"access_key": "AKIDOLD", "secret_key": SECRET, "token": TOKEN, "expiry_time": expired.isoformat()},
        refresh_using=refresh,
        method="sso",
    )
    signer = Signer(CredentialSource(credentials=credentials), REGION)
    with pytest.raises(errors.CredentialsError) as caught:
        signer.sign("GET", "https://example.com/", {}, b"")
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)
