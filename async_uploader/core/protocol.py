"""The HealthOmics sequence-store wire format: requests built and responses parsed, with no I/O.

Every builder returns an ``HttpRequest`` whose method, percent-encoded path, query and JSON body are exactly
what botocore's own ``omics`` client serializes for the same parameters (API 2022-11-28, rest-json). The
host a request goes to is carried by ``Endpoint``: parts, Complete and GetReadSet go to ``storage-omics``, the
rest to ``control-storage-omics``. Error replies become the ``ServiceError`` subclass named by their code.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from .config import MAX_PART_SIZE, ReadSet, Source
from .errors import ServiceError, UnavailableError, error_for_code
from .ratelimit import RequestKind

__all__ = [
    "DEFAULT_ANSWER_LIMIT",
    "ERROR_ANSWER_LIMIT",
    "OPERATIONS",
    "CompletedPart",
    "CreatedUpload",
    "Endpoint",
    "HttpRequest",
    "ListedPart",
    "OperationInfo",
    "ReadSetETag",
    "ReadSetMetadata",
    "UploadSummary",
    "abort_upload",
    "answer_limit",
    "complete_upload",
    "create_upload",
    "error_from_response",
    "get_read_set",
    "get_read_set_metadata",
    "get_sequence_store",
    "list_parts",
    "list_uploads",
    "parse_complete",
    "parse_create",
    "parse_list_parts",
    "parse_list_uploads",
    "parse_metadata",
    "parse_part",
    "parse_sequence_store",
    "query_string",
    "upload_part",
]

_JSON = (("Content-Type", "application/json"),)
_SAFE = "-_.~"
"""Characters left unescaped in path labels and query values, as botocore's percent_encode does."""


_KIB = 1024
_MIB = 1024 * _KIB

_SMALL_ANSWER = 64 * _KIB
"""Create, a part, Complete, Abort: a few hundred bytes of JSON in truth."""
_PAGE_ANSWER = 4 * _MIB
"""A listing's page (at most 100 entries of a few hundred bytes to a few KiB) or one read set's metadata."""

ERROR_ANSWER_LIMIT = 64 * _KIB
"""The most an error answer (any status outside 2xx) may hold: a code and a message."""
DEFAULT_ANSWER_LIMIT = 1 * _MIB
"""The most an answer to a request of no operation here (the reachability probe) may hold."""


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """What the request machinery needs to know of an operation: its quota, whether it carries bulk data, and the
    most its successful answer may hold.

    A request that carries bulk data (a part, a downloaded part) may take as long as its bytes need; every other
    operation has an overall deadline. ``answer_limit`` bounds the bytes read of an answer: past it (or when the
    answer announces more) the attempt fails (``AnswerTooLargeError``) instead of the process's memory growing
    with a body that never ends, which no deadline of progress would stop.
    """

    kind: RequestKind
    moves_data: bool = False
    answer_limit: int = _SMALL_ANSWER


OPERATIONS: Mapping[str, OperationInfo] = {
    "CreateMultipartReadSetUpload": OperationInfo(RequestKind.CONTROL),
    "CompleteMultipartReadSetUpload": OperationInfo(RequestKind.CONTROL),
    "AbortMultipartReadSetUpload": OperationInfo(RequestKind.CONTROL),
    "UploadReadSetPart": OperationInfo(RequestKind.PART, moves_data=True),
    "ListReadSetUploadParts": OperationInfo(RequestKind.LISTING, answer_limit=_PAGE_ANSWER),
    "ListMultipartReadSetUploads": OperationInfo(RequestKind.LISTING, answer_limit=_PAGE_ANSWER),
    "GetReadSetMetadata": OperationInfo(RequestKind.LISTING, answer_limit=_PAGE_ANSWER),
    "ListReadSets": OperationInfo(RequestKind.LISTING, answer_limit=_PAGE_ANSWER),
    "GetReadSet": OperationInfo(RequestKind.UNLIMITED, moves_data=True, answer_limit=MAX_PART_SIZE + _SMALL_ANSWER),
    "GetSequenceStore": OperationInfo(RequestKind.LISTING, answer_limit=_PAGE_ANSWER),
}
"""Every operation the client sends, with the service quota it counts against (healthomics-api.md, "Service
quotas"): Create, Complete and Abort share 1/s; parts 10/s; listings and metadata 5/s. A part's answer is a
checksum, a listing's a page, GetReadSet's one part of at most 100 MiB."""


def answer_limit(operation: str, status: int) -> int:
    """The most bytes the answer to ``operation`` with ``status`` may hold (an error's: ``ERROR_ANSWER_LIMIT``)."""
    info = OPERATIONS.get(operation)
    limit = info.answer_limit if info is not None else DEFAULT_ANSWER_LIMIT
    return limit if 200 <= status < 300 else min(limit, ERROR_ANSWER_LIMIT)


class Endpoint(enum.StrEnum):
    """Which of the two service hosts a request goes to; the value is the host prefix without its dash."""

    STORAGE = "storage"
    CONTROL = "control-storage"

    def host(self, region: str) -> str:
        return f"{self.value}-omics.{region}.amazonaws.com"


@dataclass(frozen=True)
class HttpRequest:
    """A request ready to be signed and sent. ``body`` is empty for parts: the caller streams their bytes."""

    operation: str
    method: str
    endpoint: Endpoint
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_length: int = 0

    @property
    def query_string(self) -> str:
        return query_string(self.query)


def query_string(query: Sequence[tuple[str, str]]) -> str:
    """``key=value&...`` percent-encoded the way botocore encodes a query (``quote``, not ``quote_plus``)."""
    return "&".join(f"{quote(key, safe=_SAFE)}={quote(value, safe=_SAFE)}" for key, value in query)


def _label(value: str) -> str:
    return quote(value, safe=_SAFE)


def _store(store_id: str) -> str:
    return f"/sequencestore/{_label(store_id)}"


def _upload(store_id: str, upload_id: str) -> str:
    return f"{_store(store_id)}/upload/{_label(upload_id)}"


def _paging(max_results: int | None, next_token: str | None) -> tuple[tuple[str, str], ...]:
    query: list[tuple[str, str]] = []
    if max_results is not None:
        query.append(("maxResults", str(max_results)))
    if next_token is not None:
        query.append(("nextToken", next_token))
    return tuple(query)


def _json_request(
    operation: str,
    method: str,
    endpoint: Endpoint,
    path: str,
    body: Mapping[str, Any],
    *,
    query: tuple[tuple[str, str], ...] = (),
) -> HttpRequest:
    data = json.dumps(body).encode("utf-8")
    return HttpRequest(operation, method, endpoint, path, query, _JSON, data, len(data))


def _empty_request(
    operation: str, method: str, endpoint: Endpoint, path: str, query: tuple[tuple[str, str], ...] = ()
) -> HttpRequest:
    return HttpRequest(operation, method, endpoint, path, query)


# ----------------------------------------------------------------------------------------------------
# Requests


def create_upload(store_id: str, read_set: ReadSet, client_token: str) -> HttpRequest:
    """CreateMultipartReadSetUpload: POST /sequencestore/{id}/upload on control-storage."""
    body: dict[str, Any] = {"clientToken": client_token, "sourceFileType": read_set.file_type.value}
    body["subjectId"] = read_set.subject_id
    body["sampleId"] = read_set.sample_id
    if read_set.generated_from is not None:
        body["generatedFrom"] = read_set.generated_from
    if read_set.reference_arn is not None:
        body["referenceArn"] = read_set.reference_arn
    body["name"] = read_set.name
    if read_set.description is not None:
        body["description"] = read_set.description
    if read_set.tags:
        body["tags"] = dict(read_set.tags)
    return _json_request("CreateMultipartReadSetUpload", "POST", Endpoint.CONTROL, f"{_store(store_id)}/upload", body)


def upload_part(store_id: str, upload_id: str, source: Source, number: int, length: int) -> HttpRequest:
    """UploadReadSetPart: PUT .../part?partSource=&partNumber= on storage; the caller streams the bytes."""
    query = (("partSource", Source(source).value), ("partNumber", str(number)))
    return HttpRequest(
        "UploadReadSetPart",
        "PUT",
        Endpoint.STORAGE,
        f"{_upload(store_id, upload_id)}/part",
        query,
        (),
        b"",
        length,
    )


class CompletedPart(Protocol):
    """Anything naming an acknowledged part: a checkpoint record, a listed part."""

    @property
    def source(self) -> Source: ...

    @property
    def number(self) -> int: ...

    @property
    def checksum(self) -> str: ...


def _part_fields(part: CompletedPart | tuple[Source, int, str]) -> tuple[str, int, str]:
    if isinstance(part, tuple):
        source, number, checksum = part
    else:
        source, number, checksum = part.source, part.number, part.checksum
    return Source(source).value, int(number), checksum


def complete_upload(
    store_id: str, upload_id: str, parts: Sequence[CompletedPart | tuple[Source, int, str]]
) -> HttpRequest:
    """CompleteMultipartReadSetUpload: POST .../complete on storage, parts sorted by source then number."""
    ordered = sorted(_part_fields(part) for part in parts)
    body = {
        "parts": [
            {"partNumber": number, "partSource": source, "checksum": checksum} for source, number, checksum in ordered
        ]
    }
    return _json_request(
        "CompleteMultipartReadSetUpload",
        "POST",
        Endpoint.STORAGE,
        f"{_upload(store_id, upload_id)}/complete",
        body,
    )


def abort_upload(store_id: str, upload_id: str) -> HttpRequest:
    """AbortMultipartReadSetUpload: DELETE .../abort on control-storage."""
    return _empty_request(
        "AbortMultipartReadSetUpload", "DELETE", Endpoint.CONTROL, f"{_upload(store_id, upload_id)}/abort"
    )


def list_parts(
    store_id: str,
    upload_id: str,
    source: Source,
    max_results: int | None = None,
    next_token: str | None = None,
) -> HttpRequest:
    """ListReadSetUploadParts: POST .../parts on control-storage, one source per listing."""
    return _json_request(
        "ListReadSetUploadParts",
        "POST",
        Endpoint.CONTROL,
        f"{_upload(store_id, upload_id)}/parts",
        {"partSource": Source(source).value},
        query=_paging(max_results, next_token),
    )


def list_uploads(store_id: str, max_results: int | None = None, next_token: str | None = None) -> HttpRequest:
    """ListMultipartReadSetUploads: POST /sequencestore/{id}/uploads on control-storage, empty body."""
    return _empty_request(
        "ListMultipartReadSetUploads",
        "POST",
        Endpoint.CONTROL,
        f"{_store(store_id)}/uploads",
        _paging(max_results, next_token),
    )


def list_read_sets(
    store_id: str,
    read_set_filter: Mapping[str, str] | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
) -> HttpRequest:
    """ListReadSets: POST /sequencestore/{id}/readsets on control-storage, JSON {"filter": {...}}."""
    body: dict[str, Any] = {"filter": dict(read_set_filter)} if read_set_filter else {}
    return _json_request(
        "ListReadSets",
        "POST",
        Endpoint.CONTROL,
        f"{_store(store_id)}/readsets",
        body,
        query=_paging(max_results, next_token),
    )


def get_read_set_metadata(store_id: str, read_set_id: str) -> HttpRequest:
    """GetReadSetMetadata: GET /sequencestore/{id}/readset/{readSetId}/metadata on control-storage."""
    path = f"{_store(store_id)}/readset/{_label(read_set_id)}/metadata"
    return _empty_request("GetReadSetMetadata", "GET", Endpoint.CONTROL, path)


def get_sequence_store(store_id: str) -> HttpRequest:
    """GetSequenceStore: GET /sequencestore/{id} on control-storage (the store's ETag algorithm family)."""
    return _empty_request("GetSequenceStore", "GET", Endpoint.CONTROL, _store(store_id))


def get_read_set(store_id: str, read_set_id: str, source: Source, part_number: int) -> HttpRequest:
    """GetReadSet: GET /sequencestore/{id}/readset/{readSetId}?file=&partNumber= on storage."""
    return _empty_request(
        "GetReadSet",
        "GET",
        Endpoint.STORAGE,
        f"{_store(store_id)}/readset/{_label(read_set_id)}",
        (("file", Source(source).value), ("partNumber", str(part_number))),
    )


# ----------------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class CreatedUpload:
    upload_id: str
    creation_time: str | None = None


@dataclass(frozen=True)
class ListedPart:
    source: Source
    number: int
    size: int
    checksum: str
    creation_time: str | None = None
    last_updated_time: str | None = None


@dataclass(frozen=True)
class UploadSummary:
    """One in-progress upload as ListMultipartReadSetUploads reports it (no status, no part count)."""

    sequence_store_id: str
    upload_id: str
    source_file_type: str | None = None
    subject_id: str | None = None
    sample_id: str | None = None
    name: str | None = None
    generated_from: str | None = None
    reference_arn: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    creation_time: str | None = None


@dataclass(frozen=True)
class ReadSetMetadata:
    id: str
    status: str
    status_message: str | None = None
    name: str | None = None
    arn: str | None = None
    sequence_store_id: str | None = None
    subject_id: str | None = None
    sample_id: str | None = None
    file_type: str | None = None
    reference_arn: str | None = None
    description: str | None = None
    creation_time: str | None = None
    files: Mapping[str, Any] = field(default_factory=dict)
    etag: ReadSetETag | None = None
    reads: int | None = None
    bases: int | None = None


@dataclass(frozen=True)
class ReadSetETag:
    """GetReadSetMetadata's ``etag``: the service's digest of each source's semantic content, and its algorithm."""

    algorithm: str
    sources: Mapping[Source, str]


def parse_sequence_store(body: bytes) -> str | None:
    """GetSequenceStore's ``eTagAlgorithmFamily`` (MD5up, SHA256up, SHA512up), or None when it names none."""
    return _optional(_object("GetSequenceStore", body), "eTagAlgorithmFamily")


def _etag(data: Mapping[str, Any]) -> ReadSetETag | None:
    etag = data.get("etag")
    if not isinstance(etag, dict) or not isinstance(etag.get("algorithm"), str):
        return None
    sources = {s: etag.get(key) for s, key in ((Source.SOURCE1, "source1"), (Source.SOURCE2, "source2"))}
    return ReadSetETag(etag["algorithm"], {s: v for s, v in sources.items() if isinstance(v, str) and v})


def _count(data: Mapping[str, Any], key: str) -> int | None:
    info = data.get("sequenceInformation")
    value = info.get(key) if isinstance(info, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _malformed(operation: str, why: str) -> ServiceError:
    return UnavailableError(f"malformed response: {why}", code="InvalidResponse", operation=operation)


def _object(operation: str, body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise _malformed(operation, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise _malformed(operation, "the body is not a JSON object")
    return data


def _string(operation: str, data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _malformed(operation, f"{key!r} is missing")
    return value


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return str(value)


def _int(operation: str, data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(operation, f"{key!r} is not an integer")
    return value


def _source(operation: str, value: Any) -> Source:
    try:
        return Source(value)
    except ValueError:
        raise _malformed(operation, f"unknown part source {value!r}") from None


def _next_token(data: Mapping[str, Any]) -> str | None:
    token = data.get("nextToken")
    return token if isinstance(token, str) and token else None


def parse_create(body: bytes) -> CreatedUpload:
    operation = "CreateMultipartReadSetUpload"
    data = _object(operation, body)
    return CreatedUpload(_string(operation, data, "uploadId"), _optional(data, "creationTime"))


def parse_part(body: bytes) -> str:
    """The opaque checksum the store returned for a part; it must be handed back verbatim on Complete."""
    return _string("UploadReadSetPart", _object("UploadReadSetPart", body), "checksum")


def parse_complete(body: bytes) -> str:
    operation = "CompleteMultipartReadSetUpload"
    return _string(operation, _object(operation, body), "readSetId")


def parse_list_parts(body: bytes) -> tuple[list[ListedPart], str | None]:
    operation = "ListReadSetUploadParts"
    data = _object(operation, body)
    parts = []
    for item in data.get("parts") or []:
        if not isinstance(item, dict):
            raise _malformed(operation, "a part is not an object")
        parts.append(
            ListedPart(
                source=_source(operation, item.get("partSource")),
                number=_int(operation, item, "partNumber"),
                size=_int(operation, item, "partSize"),
                checksum=_string(operation, item, "checksum"),
                creation_time=_optional(item, "creationTime"),
                last_updated_time=_optional(item, "lastUpdatedTime"),
            )
        )
    return parts, _next_token(data)


def parse_list_uploads(body: bytes) -> tuple[list[UploadSummary], str | None]:
    operation = "ListMultipartReadSetUploads"
    data = _object(operation, body)
    uploads = []
    for item in data.get("uploads") or []:
        if not isinstance(item, dict):
            raise _malformed(operation, "an upload is not an object")
        tags = item.get("tags")
        uploads.append(
            UploadSummary(
                sequence_store_id=_string(operation, item, "sequenceStoreId"),
                upload_id=_string(operation, item, "uploadId"),
                source_file_type=_optional(item, "sourceFileType"),
                subject_id=_optional(item, "subjectId"),
                sample_id=_optional(item, "sampleId"),
                name=_optional(item, "name"),
                generated_from=_optional(item, "generatedFrom"),
                reference_arn=_optional(item, "referenceArn"),
                description=_optional(item, "description"),
                tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
                creation_time=_optional(item, "creationTime"),
            )
        )
    return uploads, _next_token(data)


def parse_list_read_sets(body: bytes) -> tuple[list[ReadSetMetadata], str | None]:
    operation = "ListReadSets"
    data = _object(operation, body)
    found = []
    for item in data.get("readSets") or []:
        if not isinstance(item, dict):
            raise _malformed(operation, "a read set is not an object")
        found.append(_metadata(operation, item))
    return found, _next_token(data)


def parse_metadata(body: bytes) -> ReadSetMetadata:
    operation = "GetReadSetMetadata"
    return _metadata(operation, _object(operation, body))


def _metadata(operation: str, data: dict[str, Any]) -> ReadSetMetadata:
    files = data.get("files")
    return ReadSetMetadata(
        id=_string(operation, data, "id"),
        status=_string(operation, data, "status"),
        status_message=_optional(data, "statusMessage"),
        name=_optional(data, "name"),
        arn=_optional(data, "arn"),
        sequence_store_id=_optional(data, "sequenceStoreId"),
        subject_id=_optional(data, "subjectId"),
        sample_id=_optional(data, "sampleId"),
        file_type=_optional(data, "fileType"),
        reference_arn=_optional(data, "referenceArn"),
        description=_optional(data, "description"),
        creation_time=_optional(data, "creationTime"),
        files=files if isinstance(files, dict) else {},
        etag=_etag(data),
        reads=_count(data, "totalReadCount"),
        bases=_count(data, "totalBaseCount"),
    )


# ----------------------------------------------------------------------------------------------------
# Errors


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _clean_code(raw: str) -> str:
    """``ns#Code:http://...`` → ``Code``: the namespace prefix and the ``:...`` suffix are dropped."""
    code = raw.split(":", 1)[0].strip()
    return code.rsplit("#", 1)[-1]


def error_from_response(operation: str, status: int, headers: Mapping[str, str], body: bytes) -> ServiceError:
    """The exception for an error reply: code from x-amzn-ErrorType, else body ``__type``, else the status."""
    data: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body.strip() else {}
        if isinstance(parsed, dict):
            data = parsed
    except (ValueError, UnicodeDecodeError):
        pass

    code: str | None = None
    header = _header(headers, "x-amzn-ErrorType")
    if header and _clean_code(header):
        code = _clean_code(header)
    else:
        for key in ("__type", "code", "Code"):
            value = data.get(key)
            if isinstance(value, str) and _clean_code(value):
                code = _clean_code(value)
                break

    message = ""
    for key in ("message", "Message", "errorMessage"):
        value = data.get(key)
        if isinstance(value, str) and value:
            message = value
            break
    if not message:
        text = body.decode("utf-8", "replace").strip() if not data else ""
        message = " ".join(text.split())[:200] if text else f"HTTP {status}"

    cls = error_for_code(code, status)
    return cls(message, status=status, code=code, operation=operation)
