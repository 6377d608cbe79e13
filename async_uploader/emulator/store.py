"""The sequence stores' state: uploads in progress, their parts on disk, and completed read sets.

Everything here is synchronous and quick (no body bytes pass through it); the app streams part bodies to
the file named by :meth:`State.part_tmp_path` and then calls :meth:`State.put_part`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ApiError, not_found, validation

ID_RE = re.compile(r"[0-9]{10,36}")
FILE_TYPES = ("FASTQ", "BAM", "CRAM", "UBAM")
SOURCES = ("SOURCE1", "SOURCE2")
MAX_PART_NUMBER = 10_000
ARN_PREFIX = "arn:aws:omics:us-east-1:123456789012:sequenceStore/"
TEXT_FIELDS = {"subjectId": 127, "sampleId": 127, "name": 127, "generatedFrom": 127, "description": 255}


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_id(value: str, what: str) -> str:
    if not ID_RE.fullmatch(value):
        raise validation(f"{what} {value!r} must be 10 to 36 digits")
    return value


def check_source(value: object, what: str = "partSource") -> str:
    if value not in SOURCES:
        raise validation(f"{what} must be one of SOURCE1, SOURCE2, got {value!r}")
    assert isinstance(value, str)
    return value


def check_part_number(value: object) -> int:
    if isinstance(value, str):
        if not value.isdigit():
            raise validation(f"partNumber must be an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PART_NUMBER:
        raise validation(f"partNumber must be between 1 and {MAX_PART_NUMBER}, got {value!r}")
    return value


def _text(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"{name} is required")
        return None
    limit = TEXT_FIELDS[name]
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise validation(f"{name} must be 1 to {limit} printable characters")
    return value


@dataclass
class PartInfo:
    source: str
    number: int
    size: int
    checksum: str
    created: datetime
    updated: datetime
    path: Path | None


@dataclass
class Upload:
    store_id: str
    upload_id: str
    fields: dict[str, Any]
    created: datetime
    directory: Path
    parts: dict[tuple[str, int], PartInfo] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "sequenceStoreId": self.store_id,
            "uploadId": self.upload_id,
            **self.fields,
            "creationTime": iso(self.created),
        }


@dataclass
class ReadSet:
    store_id: str
    read_set_id: str
    upload_id: str
    fields: dict[str, Any]
    created: datetime
    files: dict[str, list[PartInfo]]
    status: str = "PROCESSING_UPLOAD"
    status_message: str | None = None

    def metadata(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for source, parts in self.files.items():
            files[source.lower()] = {
                "totalParts": len(parts),
                "partSize": parts[0].size,
                "contentLength": sum(p.size for p in parts),
            }
        reply: dict[str, Any] = {
            "id": self.read_set_id,
            "arn": f"{ARN_PREFIX}{self.store_id}/readSet/{self.read_set_id}",
            "sequenceStoreId": self.store_id,
            "status": self.status,
            "fileType": self.fields["sourceFileType"],
            "creationTime": iso(self.created),
            "creationType": "UPLOAD",
            "files": files,
        }
        for name in ("subjectId", "sampleId", "name", "description", "referenceArn"):
            if name in self.fields:
                reply[name] = self.fields[name]
        if "generatedFrom" in self.fields:
            reply["sequenceInformation"] = {"generatedFrom": self.fields["generatedFrom"]}
        if self.status_message:
            reply["statusMessage"] = self.status_message
        return reply

    def list_item(self) -> dict[str, Any]:
        """The ListReadSets entry: the metadata less the per-file details."""
        item = self.metadata()
        item.pop("files", None)
        return item


@dataclass
class SequenceStore:
    store_id: str
    uploads: dict[str, Upload] = field(default_factory=dict)
    read_sets: dict[str, ReadSet] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


def page(items: list[Any], max_results: str | None, next_token: str | None) -> tuple[list[Any], str | None]:
    """Slice ``items`` for one page; tokens are opaque offsets."""
    size = 100
    if max_results is not None:
        if not max_results.isdigit() or not 1 <= int(max_results) <= 100:
            raise validation(f"maxResults must be between 1 and 100, got {max_results!r}")
        size = int(max_results)
    start = 0
    if next_token is not None:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(next_token.encode()))["offset"])
        except (ValueError, KeyError, TypeError):
            raise validation("invalid nextToken") from None
    chunk = items[start : start + size]
    end = start + len(chunk)
    token = None
    if end < len(items):
        token = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode()
    return chunk, token


def format_problem(file_type: str, head: bytes, source: str) -> str | None:
    """A light check of a source's first bytes; None when it looks right."""
    if file_type == "FASTQ":
        if head[:2] == b"\x1f\x8b" or head[:1] == b"@":
            return None
        return f"{source} is neither gzip-compressed nor plain FASTQ"
    if file_type in ("BAM", "UBAM"):
        return None if head[:2] == b"\x1f\x8b" else f"{source} is not a BGZF-compressed {file_type} file"
    if file_type == "CRAM":
        return None if head[:4] == b"CRAM" else f"{source} is not a CRAM file"
    return f"unknown file type {file_type}"


class State:
    """All sequence stores of one emulator, with parts and read sets under ``data_dir``."""

    def __init__(self, data_dir: Path, discard: bool) -> None:
        self.data_dir = data_dir
        self.discard = discard
        self.stores: dict[str, SequenceStore] = {}
        self._key = secrets.token_bytes(32)
        self._serial = itertools.count(1)

    def _new_id(self) -> str:
        return f"{secrets.randbelow(9 * 10**9) + 10**9}{next(self._serial):08d}"

    def store(self, store_id: str) -> SequenceStore:
        check_id(store_id, "sequenceStoreId")
        found = self.stores.get(store_id)
        if found is None:
            found = self.stores[store_id] = SequenceStore(store_id)
        return found

    def upload(self, store_id: str, upload_id: str) -> Upload:
        store = self.store(store_id)
        check_id(upload_id, "uploadId")
        found = store.uploads.get(upload_id)
        if found is None:
            raise not_found(f"upload {upload_id} not found in sequence store {store_id}")
        return found

    def read_set(self, store_id: str, read_set_id: str) -> ReadSet:
        store = self.store(store_id)
        check_id(read_set_id, "id")
        found = store.read_sets.get(read_set_id)
        if found is None:
            raise not_found(f"read set {read_set_id} not found in sequence store {store_id}")
        return found

    # --- CreateMultipartReadSetUpload
    def create_upload(self, store_id: str, body: dict[str, Any]) -> dict[str, Any]:
        store = self.store(store_id)
        file_type = body.get("sourceFileType")
        if file_type not in FILE_TYPES:
            raise validation(f"sourceFileType must be one of {', '.join(FILE_TYPES)}, got {file_type!r}")
        fields: dict[str, Any] = {"sourceFileType": file_type}
        for name in TEXT_FIELDS:
            value = _text(body, name, required=name in ("subjectId", "sampleId", "name"))
            if value is not None:
                fields[name] = value
        arn = body.get("referenceArn")
        if arn is not None:
            if not isinstance(arn, str) or not arn.startswith("arn:") or not 5 <= len(arn) <= 127:
                raise validation("referenceArn must match arn:.+ and be at most 127 characters")
            fields["referenceArn"] = arn
        elif file_type in ("BAM", "CRAM"):
            raise validation(f"referenceArn is required for {file_type} read sets")
        tags = body.get("tags")
        if tags is not None:
            if not isinstance(tags, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 128 and len(v) <= 256
                for k, v in tags.items()
            ):
                raise validation("tags must map 1-128 character keys to 0-256 character values")
            fields["tags"] = tags
        token = body.get("clientToken")
        if token is not None:
            if not isinstance(token, str) or not 1 <= len(token) <= 127:
                raise validation("clientToken must be 1 to 127 characters")
            known = store.tokens.get(token)
            if known is not None and known in store.uploads:
                return store.uploads[known].summary()
        upload_id = self._new_id()
        directory = self.data_dir / store_id / upload_id
        if not self.discard:
            directory.mkdir(parents=True, exist_ok=True)
        upload = Upload(store_id, upload_id, fields, now_utc(), directory)
        store.uploads[upload_id] = upload
        if token is not None:
            store.tokens[token] = upload_id
        return upload.summary()

    # --- UploadReadSetPart
    def part_tmp_path(self, upload: Upload, source: str, number: int) -> Path | None:
        if self.discard:
            return None
        return upload.directory / f".{source}.{number}.{secrets.token_hex(6)}.tmp"

    def checksum(self, upload: Upload, source: str, number: int, digest: bytes) -> str:
        identity = f"|{upload.store_id}|{upload.upload_id}|{source}|{number}".encode()
        return hmac.new(self._key, digest + identity, hashlib.sha256).hexdigest()

    def put_part(self, upload: Upload, source: str, number: int, *, size: int, digest: bytes, tmp: Path | None) -> str:
        """Record a fully received part (replacing any earlier one); return its checksum."""
        store = self.stores[upload.store_id]
        if store.uploads.get(upload.upload_id) is not upload:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise not_found(f"upload {upload.upload_id} was aborted or completed")
        path = None
        if tmp is not None:
            path = upload.directory / f"{source}.{number}"
            os.replace(tmp, path)
        checksum = self.checksum(upload, source, number, digest)
        moment = now_utc()
        old = upload.parts.get((source, number))
        created = old.created if old is not None else moment
        upload.parts[(source, number)] = PartInfo(source, number, size, checksum, created, moment, path)
        return checksum

    # --- AbortMultipartReadSetUpload
    def abort(self, store_id: str, upload_id: str) -> None:
        upload = self.upload(store_id, upload_id)
        del self.stores[store_id].uploads[upload_id]
        shutil.rmtree(upload.directory, ignore_errors=True)

    # --- CompleteMultipartReadSetUpload
    def complete(self, store_id: str, upload_id: str, body: dict[str, Any]) -> ReadSet:
        upload = self.upload(store_id, upload_id)
        listed = body.get("parts")
        if not isinstance(listed, list) or not listed:
            raise validation("parts must list every uploaded part")
        seen: set[tuple[str, int]] = set()
        for item in listed:
            if not isinstance(item, dict):
                raise validation("each entry of parts needs partNumber, partSource and checksum")
            source = check_source(item.get("partSource"))
            number = check_part_number(item.get("partNumber"))
            checksum = item.get("checksum")
            if not isinstance(checksum, str):
                raise validation(f"{source} part {number}: checksum is required")
            if (source, number) in seen:
                raise validation(f"{source} part {number} is listed more than once")
            seen.add((source, number))
            stored = upload.parts.get((source, number))
            if stored is None:
                raise validation(f"{source} part {number} was never uploaded")
            if not hmac.compare_digest(stored.checksum, checksum):
                raise validation(f"{source} part {number}: checksum does not match the uploaded part")
        missing = sorted(set(upload.parts) - seen)
        if missing:
            source, number = missing[0]
            raise validation(f"{source} part {number} was uploaded but is missing from the parts list")
        files: dict[str, list[PartInfo]] = {}
        for source in SOURCES:
            numbers = sorted(n for s, n in seen if s == source)
            if numbers and numbers != list(range(1, len(numbers) + 1)):
                gap = next(n for i, n in enumerate(numbers, 1) if n != i)
                raise validation(f"{source} parts must be numbered 1..N without gaps (found {gap})")
            if numbers:
                files[source] = [upload.parts[(source, n)] for n in numbers]
        if "SOURCE1" not in files:
            raise validation("a read set needs SOURCE1")
        file_type = upload.fields["sourceFileType"]
        if "SOURCE2" in files and file_type != "FASTQ":
            raise validation(f"SOURCE2 is only allowed for FASTQ read sets, not {file_type}")
        read_set_id = self._new_id()
        if not self.discard:
            target = self.data_dir / store_id / "readsets" / read_set_id
            target.mkdir(parents=True)
            for parts in files.values():
                for part in parts:
                    assert part.path is not None
                    moved = target / part.path.name
                    os.replace(part.path, moved)
                    part.path = moved
        store = self.stores[store_id]
        del store.uploads[upload_id]
        shutil.rmtree(upload.directory, ignore_errors=True)
        read_set = ReadSet(store_id, read_set_id, upload_id, upload.fields, now_utc(), files)
        store.read_sets[read_set_id] = read_set
        return read_set

    def finish_processing(self, read_set: ReadSet) -> None:
        """The format check that turns PROCESSING_UPLOAD into ACTIVE or UPLOAD_FAILED."""
        problem = None
        if not self.discard:
            for source, parts in read_set.files.items():
                first = parts[0].path
                assert first is not None
                with first.open("rb") as handle:
                    problem = format_problem(read_set.fields["sourceFileType"], handle.read(4), source)
                if problem:
                    break
        if problem:
            read_set.status = "UPLOAD_FAILED"
            read_set.status_message = problem
        else:
            read_set.status = "ACTIVE"

    # --- listings
    def list_parts(self, upload: Upload, source: str, body: dict[str, Any]) -> list[PartInfo]:
        after = before = None
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise validation("filter must be an object")
        try:
            if flt.get("createdAfter") is not None:
                after = _parse_time(flt["createdAfter"])
            if flt.get("createdBefore") is not None:
                before = _parse_time(flt["createdBefore"])
        except (ValueError, TypeError):
            raise validation("filter times must be ISO-8601 timestamps") from None
        parts = sorted((p for (s, _), p in upload.parts.items() if s == source), key=lambda p: p.number)
        if after is not None:
            parts = [p for p in parts if p.created > after]
        if before is not None:
            parts = [p for p in parts if p.created < before]
        return parts

    def list_read_sets(self, store_id: str, body: dict[str, Any]) -> list[ReadSet]:
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise validation("filter must be an object")
        try:
            after = _parse_time(flt["createdAfter"]) if flt.get("createdAfter") is not None else None
            before = _parse_time(flt["createdBefore"]) if flt.get("createdBefore") is not None else None
        except (ValueError, TypeError):
            raise validation("filter times must be ISO-8601 timestamps") from None
        found = []
        for read_set in self.store(store_id).read_sets.values():
            item = read_set.list_item()
            keys = ("name", "sampleId", "subjectId", "status")
            if any(flt.get(k) is not None and item.get(k) != flt[k] for k in keys):
                continue
            if flt.get("creationType") not in (None, "UPLOAD"):
                continue
            if (after is not None and read_set.created <= after) or (before is not None and read_set.created >= before):
                continue
            found.append(read_set)
        return sorted(found, key=lambda r: (r.created, r.read_set_id))

    def list_uploads(self, store_id: str) -> list[Upload]:
        return sorted(self.store(store_id).uploads.values(), key=lambda u: (u.created, u.upload_id))

    def part_file(self, read_set: ReadSet, source: str, number: int) -> PartInfo:
        parts = read_set.files.get(source)
        if parts is None:
            raise not_found(f"read set {read_set.read_set_id} has no {source}")
        if number > len(parts):
            raise validation(f"{source} of read set {read_set.read_set_id} has only {len(parts)} parts")
        return parts[number - 1]


def _parse_time(value: object) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise TypeError(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def part_info_json(part: PartInfo) -> dict[str, Any]:
    return {
        "partNumber": part.number,
        "partSize": part.size,
        "partSource": part.source,
        "checksum": part.checksum,
        "creationTime": iso(part.created),
        "lastUpdatedTime": iso(part.updated),
    }


__all__ = ["ApiError", "State"]
