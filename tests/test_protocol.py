"""protocol.py against botocore's own rest-json serializer for the omics service model."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer
from botocore.utils import percent_encode_sequence

from async_uploader.core import errors, protocol
from async_uploader.core.config import FileType, ReadSet, Source
from async_uploader.core.protocol import Endpoint, HttpRequest

STORE = "1234567890"
UPLOAD = "98765432101234"
READ_SET = "5555555555"
TRICKY_TOKEN = "a/b+c=d e&f%g~h_i.j-k?l#m\u00e9"


@pytest.fixture(scope="module")
def model() -> Any:
    return botocore.session.get_session().get_service_model("omics")


def botocore_request(model: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    serializer = create_serializer("rest-json", include_validation=True)
    return serializer.serialize_to_request(params, model.operation_model(operation))  # type: ignore[no-any-return]


def assert_same(ours: HttpRequest, theirs: dict[str, Any], operation: str) -> None:
    assert ours.operation == operation
    assert ours.method == theirs["method"]
    assert ours.path == theirs["url_path"]
    expected_query = percent_encode_sequence(theirs["query_string"]) if theirs["query_string"] else ""
    assert ours.query_string == expected_query
    if theirs["body"]:
        assert json.loads(ours.body) == json.loads(theirs["body"])
    else:
        assert ours.body == b""
    assert ("Content-Type", "application/json") in ours.headers if theirs["body"] else ours.headers == ()
    assert theirs["host_prefix"] == ours.endpoint.value + "-"


def read_set(**overrides: Any) -> ReadSet:
    fields: dict[str, Any] = {
        "source1": "r1.fastq.gz",
        "file_type": FileType.FASTQ,
        "subject_id": "subject-1",
        "sample_id": "sample 1",
        "name": "run 42",
    }
    fields.update(overrides)
    return ReadSet(**fields)


CREATE_CASES = [
    ({}, {}),
    (
        {
            "source2": "r2.fastq.gz",
            "generated_from": "sequencer X",
            "description": "paired reads, ü",
            "tags": {"project": "p/1", "empty": ""},
        },
        {"generatedFrom": "sequencer X", "description": "paired reads, ü", "tags": {"project": "p/1", "empty": ""}},
    ),
    (
        {"file_type": FileType.BAM, "reference_arn": "arn:aws:omics:us-east-1:123456789012:referenceStore/1/x"},
        {"referenceArn": "arn:aws:omics:us-east-1:123456789012:referenceStore/1/x", "sourceFileType": "BAM"},
    ),
]


@pytest.mark.parametrize(("overrides", "extra"), CREATE_CASES)
def test_create_matches_botocore(model: Any, overrides: dict[str, Any], extra: dict[str, Any]) -> None:
    rs = read_set(**overrides)
    params: dict[str, Any] = {
        "sequenceStoreId": STORE,
        "clientToken": "token-1",
        "sourceFileType": "FASTQ",
        "subjectId": "subject-1",
        "sampleId": "sample 1",
        "name": "run 42",
    }
    params.update(extra)
    ours = protocol.create_upload(STORE, rs, "token-1")
    assert_same(ours, botocore_request(model, "CreateMultipartReadSetUpload", params), "CreateMultipartReadSetUpload")
    assert ours.endpoint is Endpoint.CONTROL
    assert ours.content_length == len(ours.body)


@pytest.mark.parametrize(("source", "number"), [(Source.SOURCE1, 1), (Source.SOURCE2, 10_000)])
def test_upload_part_matches_botocore(model: Any, source: Source, number: int) -> None:
    params = {
        "sequenceStoreId": STORE,
        "uploadId": UPLOAD,
        "partSource": source.value,
        "partNumber": number,
        "payload": b"",
    }
    ours = protocol.upload_part(STORE, UPLOAD, source, number, 12345)
    assert_same(ours, botocore_request(model, "UploadReadSetPart", params), "UploadReadSetPart")
    assert ours.endpoint is Endpoint.STORAGE
    assert ours.content_length == 12345
    assert ours.body == b""


def test_complete_matches_botocore_and_sorts(model: Any) -> None:
    given: list[protocol.CompletedPart | tuple[Source, int, str]] = [
        (Source.SOURCE2, 1, "c21"),
        (Source.SOURCE1, 10, "c110"),
        (Source.SOURCE1, 2, "c12"),
        protocol.ListedPart(Source.SOURCE1, 1, 5, "c11"),
    ]
    expected_parts = [
        {"partNumber": 1, "partSource": "SOURCE1", "checksum": "c11"},
        {"partNumber": 2, "partSource": "SOURCE1", "checksum": "c12"},
        {"partNumber": 10, "partSource": "SOURCE1", "checksum": "c110"},
        {"partNumber": 1, "partSource": "SOURCE2", "checksum": "c21"},
    ]
    params = {"sequenceStoreId": STORE, "uploadId": UPLOAD, "parts": expected_parts}
    ours = protocol.complete_upload(STORE, UPLOAD, given)
    assert_same(
        ours, botocore_request(model, "CompleteMultipartReadSetUpload", params), "CompleteMultipartReadSetUpload"
    )
    assert ours.endpoint is Endpoint.STORAGE


def test_abort_matches_botocore(model: Any) -> None:
    params = {"sequenceStoreId": STORE, "uploadId": UPLOAD}
    ours = protocol.abort_upload(STORE, UPLOAD)
    assert_same(ours, botocore_request(model, "AbortMultipartReadSetUpload", params), "AbortMultipartReadSetUpload")
    assert ours.method == "DELETE"


@pytest.mark.parametrize(("max_results", "token"), [(None, None), (100, None), (None, TRICKY_TOKEN), (7, TRICKY_TOKEN)])
def test_list_parts_matches_botocore(model: Any, max_results: int | None, token: str | None) -> None:
    params: dict[str, Any] = {"sequenceStoreId": STORE, "uploadId": UPLOAD, "partSource": "SOURCE2"}
    if max_results is not None:
        params["maxResults"] = max_results
    if token is not None:
        params["nextToken"] = token
    ours = protocol.list_parts(STORE, UPLOAD, Source.SOURCE2, max_results, token)
    assert_same(ours, botocore_request(model, "ListReadSetUploadParts", params), "ListReadSetUploadParts")


@pytest.mark.parametrize(("max_results", "token"), [(None, None), (50, TRICKY_TOKEN), (None, "plain")])
def test_list_uploads_matches_botocore(model: Any, max_results: int | None, token: str | None) -> None:
    params: dict[str, Any] = {"sequenceStoreId": STORE}
    if max_results is not None:
        params["maxResults"] = max_results
    if token is not None:
        params["nextToken"] = token
    ours = protocol.list_uploads(STORE, max_results, token)
    assert_same(ours, botocore_request(model, "ListMultipartReadSetUploads", params), "ListMultipartReadSetUploads")


def test_list_read_sets_matches_botocore(model: Any) -> None:
    wanted = {"name": "n a", "sampleId": "s", "subjectId": "x", "creationType": "UPLOAD"}
    params: dict[str, Any] = {"sequenceStoreId": STORE, "filter": wanted, "nextToken": TRICKY_TOKEN}
    ours = protocol.list_read_sets(STORE, wanted, None, TRICKY_TOKEN)
    assert_same(ours, botocore_request(model, "ListReadSets", params), "ListReadSets")


def test_metadata_and_get_read_set_match_botocore(model: Any) -> None:
    ours = protocol.get_read_set_metadata(STORE, READ_SET)
    theirs = botocore_request(model, "GetReadSetMetadata", {"sequenceStoreId": STORE, "id": READ_SET})
    assert_same(ours, theirs, "GetReadSetMetadata")
    params = {"sequenceStoreId": STORE, "id": READ_SET, "file": "SOURCE2", "partNumber": 3}
    ours = protocol.get_read_set(STORE, READ_SET, Source.SOURCE2, 3)
    assert_same(ours, botocore_request(model, "GetReadSet", params), "GetReadSet")
    ours = protocol.get_sequence_store(STORE)
    assert_same(ours, botocore_request(model, "GetSequenceStore", {"id": STORE}), "GetSequenceStore")


def test_every_operation_sent_has_a_quota_kind_and_is_the_models(model: Any) -> None:
    assert set(protocol.OPERATIONS) <= set(model.operation_names)


def test_etag_and_sequence_information_are_parsed() -> None:
    metadata = protocol.parse_metadata(
        b'{"id": "1", "status": "ACTIVE", "etag": {"algorithm": "FASTQ_MD5up", "source1": "ab", "source2": "cd"},'
        b' "sequenceInformation": {"totalReadCount": 10, "totalBaseCount": 1500}}'
    )
    assert metadata.etag == protocol.ReadSetETag("FASTQ_MD5up", {Source.SOURCE1: "ab", Source.SOURCE2: "cd"})
    assert (metadata.reads, metadata.bases) == (10, 1500)
    bare = protocol.parse_metadata(b'{"id": "1", "status": "ACTIVE", "etag": {"algorithm": "BAM_MD5up"}}')
    assert bare.etag == protocol.ReadSetETag("BAM_MD5up", {}) and bare.reads is None
    assert protocol.parse_sequence_store(b'{"id": "1", "eTagAlgorithmFamily": "SHA256up"}') == "SHA256up"


def test_path_labels_escaped_like_botocore(model: Any) -> None:
    odd = "a/b c"
    ours = protocol.abort_upload(odd, odd)
    theirs = create_serializer("rest-json", include_validation=False).serialize_to_request(
        {"sequenceStoreId": odd, "uploadId": odd}, model.operation_model("AbortMultipartReadSetUpload")
    )
    assert ours.path == theirs["url_path"]


def test_endpoint_host_prefix_per_operation(model: Any) -> None:
    builders = {
        "CreateMultipartReadSetUpload": protocol.create_upload(STORE, read_set(), "t"),
        "UploadReadSetPart": protocol.upload_part(STORE, UPLOAD, Source.SOURCE1, 1, 1),
        "CompleteMultipartReadSetUpload": protocol.complete_upload(STORE, UPLOAD, []),
        "AbortMultipartReadSetUpload": protocol.abort_upload(STORE, UPLOAD),
        "ListReadSetUploadParts": protocol.list_parts(STORE, UPLOAD, Source.SOURCE1),
        "ListMultipartReadSetUploads": protocol.list_uploads(STORE),
        "GetReadSetMetadata": protocol.get_read_set_metadata(STORE, READ_SET),
        "GetReadSet": protocol.get_read_set(STORE, READ_SET, Source.SOURCE1, 1),
        "ListReadSets": protocol.list_read_sets(STORE),
        "GetSequenceStore": protocol.get_sequence_store(STORE),
    }
    for name, request in builders.items():
        assert request.operation == name
        assert model.operation_model(name).endpoint["hostPrefix"] == f"{request.endpoint.value}-"
    assert Endpoint.STORAGE.host("eu-west-2") == "storage-omics.eu-west-2.amazonaws.com"
    assert Endpoint.CONTROL.host("eu-west-2") == "control-storage-omics.eu-west-2.amazonaws.com"


# Parsers ---------------------------------------------------------------------------------------------------


def test_parse_create_part_complete() -> None:
    created = protocol.parse_create(b'{"uploadId": "111", "creationTime": "2024-01-01T00:00:00Z", "name": "x"}')
    assert created == protocol.CreatedUpload("111", "2024-01-01T00:00:00Z")
    assert protocol.parse_part(b'{"checksum": "opaque/=="}') == "opaque/=="
    assert protocol.parse_complete(b'{"readSetId": "222"}') == "222"


@pytest.mark.parametrize(
    ("parser", "body"),
    [
        (protocol.parse_part, b"<html>bad gateway</html>"),
        (protocol.parse_part, b"{}"),
        (protocol.parse_part, b"[1]"),
        (protocol.parse_complete, b'{"readSetId": ""}'),
        (protocol.parse_create, b""),
        (protocol.parse_list_parts, b'{"parts": [{"partSource": "SOURCE3", "partNumber": 1}]}'),
    ],
)
def test_malformed_responses_are_retryable_errors(parser: Any, body: bytes) -> None:
    with pytest.raises(errors.UnavailableError, match="malformed response"):
        parser(body)


def test_parse_list_parts() -> None:
    body = json.dumps(
        {
            "parts": [
                {"partNumber": 1, "partSize": 10, "partSource": "SOURCE1", "checksum": "a"},
                {
                    "partNumber": 2,
                    "partSize": 3,
                    "partSource": "SOURCE2",
                    "checksum": "b",
                    "creationTime": "2024-01-01T00:00:00Z",
                },
            ],
            "nextToken": "next/page",
        }
    ).encode()
    parts, token = protocol.parse_list_parts(body)
    assert token == "next/page"
    assert parts[0] == protocol.ListedPart(Source.SOURCE1, 1, 10, "a")
    assert parts[1].source is Source.SOURCE2 and parts[1].creation_time == "2024-01-01T00:00:00Z"
    assert protocol.parse_list_parts(b'{"parts": []}') == ([], None)


def test_parse_list_uploads_and_metadata() -> None:
    body = json.dumps(
        {
            "uploads": [
                {
                    "sequenceStoreId": STORE,
                    "uploadId": UPLOAD,
                    "sourceFileType": "FASTQ",
                    "subjectId": "s",
                    "sampleId": "x",
                    "name": "n",
                    "tags": {"k": "v"},
                    "creationTime": "2024-01-01T00:00:00Z",
                }
            ]
        }
    ).encode()
    uploads, token = protocol.parse_list_uploads(body)
    assert token is None
    assert uploads[0].upload_id == UPLOAD and uploads[0].tags == {"k": "v"} and uploads[0].description is None
    meta = protocol.parse_metadata(
        json.dumps(
            {"id": READ_SET, "status": "UPLOAD_FAILED", "statusMessage": "bad gzip", "fileType": "FASTQ"}
        ).encode()
    )
    assert (meta.id, meta.status, meta.status_message, meta.file_type) == (
        READ_SET,
        "UPLOAD_FAILED",
        "bad gzip",
        "FASTQ",
    )


# Errors ----------------------------------------------------------------------------------------------------

ERROR_CASES = [
    ("ValidationException", 400, errors.ValidationError),
    ("ServiceQuotaExceededException", 402, errors.ServiceQuotaExceededError),
    ("AccessDeniedException", 403, errors.AccessDeniedError),
    ("ResourceNotFoundException", 404, errors.ResourceNotFoundError),
    ("NotSupportedOperationException", 405, errors.NotSupportedOperationError),
    ("RequestTimeoutException", 408, errors.RequestTimeoutError),
    ("ThrottlingException", 429, errors.ThrottlingError),
    ("InternalServerException", 500, errors.InternalServerError),
]


@pytest.mark.parametrize(("code", "status", "cls"), ERROR_CASES)
def test_error_from_header(code: str, status: int, cls: type[errors.ServiceError]) -> None:
    exc = protocol.error_from_response(
        "UploadReadSetPart", status, {"X-Amzn-ErrorType": code}, b'{"message": "it went wrong"}'
    )
    assert type(exc) is cls
    assert (exc.code, exc.status, exc.message, exc.operation) == (code, status, "it went wrong", "UploadReadSetPart")
    assert exc.retryable is (status in (408, 429, 500))
    assert str(exc) == f"UploadReadSetPart: {code} ({status}): it went wrong"


def test_error_header_wins_and_suffix_is_stripped() -> None:
    exc = protocol.error_from_response(
        "X",
        400,
        {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral/"},
        b'{"__type": "ValidationException", "Message": "slow down"}',
    )
    assert type(exc) is errors.ThrottlingError
    assert exc.code == "ThrottlingException" and exc.message == "slow down"


def test_error_from_body_type_with_namespace() -> None:
    exc = protocol.error_from_response(
        "X", 404, {}, b'{"__type": "com.amazonaws.omics#ResourceNotFoundException", "message": "no such upload"}'
    )
    assert type(exc) is errors.ResourceNotFoundError and exc.code == "ResourceNotFoundException"
    exc = protocol.error_from_response("X", 400, {}, b'{"code": "AccessDeniedException"}')
    assert type(exc) is errors.AccessDeniedError and exc.message == "HTTP 400"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_unavailable(status: int) -> None:
    exc = protocol.error_from_response("X", status, {"Content-Type": "text/html"}, b"<html>\n Bad   Gateway</html>")
    assert type(exc) is errors.UnavailableError and exc.retryable
    assert exc.message == "<html> Bad Gateway</html>"


def test_error_status_fallback_and_unknown_codes() -> None:
    assert type(protocol.error_from_response("X", 429, {}, b"")) is errors.ThrottlingError
    assert type(protocol.error_from_response("X", 403, {}, b"\xff\xfe")) is errors.AccessDeniedError
    exc = protocol.error_from_response("X", 403, {"x-amzn-ErrorType": "UnrecognizedClientException"}, b"{}")
    assert type(exc) is errors.AccessDeniedError and exc.code == "UnrecognizedClientException"
    exc = protocol.error_from_response("X", 409, {}, b'{"message": "conflict"}')
    assert type(exc) is errors.ServiceError and not exc.retryable
    long = protocol.error_from_response("X", 500, {}, b"x" * 5000)
    assert type(long) is errors.InternalServerError and len(long.message) == 200
