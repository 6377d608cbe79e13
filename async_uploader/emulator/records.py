"""What the store holds: uploads and their parts, read sets and the files they are served from.

Plain records with the JSON the API answers about them; :mod:`.store` decides how they change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .ingest import Outcome
from .parsing import MAX_PART_NUMBER

ARN_PREFIX = "arn:aws:omics:us-east-1:123456789012:sequenceStore/"


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def recut_size(first_part: int, length: int) -> int:
    """The part size a stored file is served in: its first part's, raised so it needs at most 10,000 parts."""
    return max(first_part, math.ceil(length / MAX_PART_NUMBER), 1)


@dataclass
class StoredFile:
    """One file of a read set: the assembled source (or index), served in parts of ``part_size``."""

    length: int
    part_size: int
    path: Path | None = None

    @property
    def total_parts(self) -> int:
        return max(1, math.ceil(self.length / self.part_size))

    def info(self) -> dict[str, int]:
        return {"totalParts": self.total_parts, "partSize": self.part_size, "contentLength": self.length}


@dataclass
class ReadSet:
    store_id: str
    read_set_id: str
    upload_id: str
    fields: dict[str, Any]
    created: datetime
    parts: dict[str, list[PartInfo]]
    files: dict[str, StoredFile] = field(default_factory=dict)
    status: str = "PROCESSING_UPLOAD"
    status_message: str | None = None
    etag: dict[str, str] | None = None
    counts: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for source, parts in self.parts.items():
            length = sum(p.size for p in parts)
            self.files[source] = StoredFile(length, recut_size(parts[0].size, length))

    def metadata(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "id": self.read_set_id,
            "arn": f"{ARN_PREFIX}{self.store_id}/readSet/{self.read_set_id}",
            "sequenceStoreId": self.store_id,
            "status": self.status,
            "fileType": self.fields["sourceFileType"],
            "creationTime": iso(self.created),
            "creationType": "UPLOAD",
            "files": {name.lower(): stored.info() for name, stored in self.files.items()},
        }
        for name in ("subjectId", "sampleId", "name", "description", "referenceArn"):
            if name in self.fields:
                reply[name] = self.fields[name]
        information: dict[str, Any] = {}
        if self.counts is not None:
            information["totalReadCount"], information["totalBaseCount"] = self.counts
        if "generatedFrom" in self.fields:
            information["generatedFrom"] = self.fields["generatedFrom"]
        if information:
            reply["sequenceInformation"] = information
        if self.etag is not None:
            reply["etag"] = dict(self.etag)
        if self.status_message:
            reply["statusMessage"] = self.status_message
        return reply

    def list_item(self) -> dict[str, Any]:
        """The ListReadSets entry: the metadata less the per-file details."""
        item = self.metadata()
        item.pop("files", None)
        return item

    def finish(self, outcome: Outcome) -> None:
        """Take what processing found: ACTIVE with the assembled files, or UPLOAD_FAILED."""
        for name, path in outcome.files.items():
            self.files[name].path = path
        if outcome.index is not None:
            length = outcome.index.stat().st_size
            self.files["INDEX"] = StoredFile(length, recut_size(length, length), outcome.index)
        self.etag, self.counts = outcome.etag, outcome.counts
        self.status = "UPLOAD_FAILED" if outcome.problem else "ACTIVE"
        self.status_message = outcome.problem


@dataclass(frozen=True)
class Completed:
    """What a finished Complete was asked (its parts and checksums) and what it answered."""

    parts: frozenset[tuple[str, int, str]]
    read_set_id: str


@dataclass
class SequenceStore:
    store_id: str
    uploads: dict[str, Upload] = field(default_factory=dict)
    read_sets: dict[str, ReadSet] = field(default_factory=dict)
    tokens: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    completed: dict[str, Completed] = field(default_factory=dict)


def part_info_json(part: PartInfo) -> dict[str, Any]:
    return {
        "partNumber": part.number,
        "partSize": part.size,
        "partSource": part.source,
        "checksum": part.checksum,
        "creationTime": iso(part.created),
        "lastUpdatedTime": iso(part.updated),
    }
