"""A receipt: what one upload sent and what it knows of it, kept so the read set can be checked later.

Written when Complete has made the read set and again when the upload ends: the store, read set and upload ids,
each source's path, size and modification time with the hash and counts computed from its bytes (when they
were), the phases' timings, the outcome of the verification, the tool's version. No credentials, no endpoint
secrets (a URL is kept without its user part). Pure: ``edge.receipts`` reads and writes the file.

The JSON, one object (``RECEIPT_VERSION`` 1)::

    {"receipt": 1, "tool": "async-uploader 0.1.0", "written": "2026-12-06T00:31:02Z",
     "storeId": "...", "readSetId": "...", "uploadId": "...", "endpoint": "http://127.0.0.1:8080" | null,
     "region": "us-east-1" | null, "name": "...", "subjectId": "...", "sampleId": "...", "fileType": "FASTQ",
     "sources": {"SOURCE1": {"path": "/abs/r1.fq.gz" | null, "size": 123, "mtimeNs": 1 | null,
                             "etag": {"family": "MD5up", "digest": "...", "reads": 10, "bases": 1500} | null}},
     "status": "ACTIVE" | "PROCESSING_UPLOAD" | ..., "verified": true | false | null, "reason": "..." | null,
     "timings": {"transferSeconds": ..., "completeSeconds": ..., "storeSeconds": ..., "verifySeconds": ...,
                 "seconds": ...}}
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .config import Source
from .errors import ConfigError

__all__ = ["RECEIPT_VERSION", "Receipt", "SourceReceipt", "public_url"]

RECEIPT_VERSION = 1


def public_url(url: str | None) -> str | None:
    """``url`` without any user or password in it (a receipt never holds a credential)."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class SourceReceipt:
    """One source: where it was read from and, when computed, its ETag as the service computes it."""

    source: Source
    path: str | None
    size: int
    mtime_ns: int | None = None
    family: str | None = None
    digest: str | None = None
    reads: int | None = None
    bases: int | None = None

    def as_json(self) -> dict[str, Any]:
        etag = None
        if self.digest is not None:
            etag = {"family": self.family, "digest": self.digest, "reads": self.reads, "bases": self.bases}
        return {"path": self.path, "size": self.size, "mtimeNs": self.mtime_ns, "etag": etag}

    @classmethod
    def from_json(cls, source: Source, data: Mapping[str, Any]) -> SourceReceipt:
        etag = data.get("etag") or {}
        return cls(
            source,
            _text_or_none(data.get("path"), "path"),
            _count(data.get("size"), "size"),
            _count_or_none(data.get("mtimeNs"), "mtimeNs"),
            _text_or_none(etag.get("family"), "etag.family"),
            _text_or_none(etag.get("digest"), "etag.digest"),
            _count_or_none(etag.get("reads"), "etag.reads"),
            _count_or_none(etag.get("bases"), "etag.bases"),
        )


@dataclass(frozen=True)
class Receipt:
    """What one upload made: see the module docstring for the file's shape."""

    store_id: str
    read_set_id: str
    upload_id: str
    name: str
    subject_id: str
    sample_id: str
    file_type: str
    sources: tuple[SourceReceipt, ...]
    endpoint: str | None = None
    region: str | None = None
    status: str | None = None
    verified: bool | None = None
    reason: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    tool: str = "async-uploader"
    written: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "receipt": RECEIPT_VERSION,
            "tool": self.tool,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.written)),
            "storeId": self.store_id,
            "readSetId": self.read_set_id,
            "uploadId": self.upload_id,
            "endpoint": public_url(self.endpoint),
            "region": self.region,
            "name": self.name,
            "subjectId": self.subject_id,
            "sampleId": self.sample_id,
            "fileType": self.file_type,
            "sources": {s.source.value: s.as_json() for s in self.sources},
            "status": self.status,
            "verified": self.verified,
            "reason": self.reason,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    @classmethod
    def from_json(cls, data: Any, name: str = "receipt") -> Receipt:
        """The receipt ``data`` holds; ConfigError naming ``name`` and the field when it is not one."""
        if not isinstance(data, Mapping) or data.get("receipt") != RECEIPT_VERSION:
            raise ConfigError(f"{name} is not an async-uploader receipt (version {RECEIPT_VERSION})")
        try:
            sources = data["sources"]
            if not isinstance(sources, Mapping) or not sources:
                raise ConfigError("no sources")
            verified = data.get("verified")
            return cls(
                store_id=_text(data["storeId"], "storeId"),
                read_set_id=_text(data["readSetId"], "readSetId"),
                upload_id=_text(data.get("uploadId") or "", "uploadId"),
                name=_text(data["name"], "name"),
                subject_id=_text(data["subjectId"], "subjectId"),
                sample_id=_text(data["sampleId"], "sampleId"),
                file_type=_text(data["fileType"], "fileType"),
                sources=tuple(SourceReceipt.from_json(Source(key), value) for key, value in sorted(sources.items())),
                endpoint=_text_or_none(data.get("endpoint"), "endpoint"),
                region=_text_or_none(data.get("region"), "region"),
                status=_text_or_none(data.get("status"), "status"),
                verified=verified if isinstance(verified, bool) else None,
                reason=_text_or_none(data.get("reason"), "reason"),
                timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
                tool=_text(data.get("tool") or "async-uploader", "tool"),
            )
        except (KeyError, ValueError, TypeError, AttributeError, ConfigError) as exc:
            raise ConfigError(f"{name} is not a valid receipt: {exc}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} is not text")
    return value


def _text_or_none(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} is not a whole number")
    return value


def _count_or_none(value: Any, what: str) -> int | None:
    return None if value is None else _count(value, what)
