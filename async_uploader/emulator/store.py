"""The sequence stores' state: uploads in progress, their parts on disk, and completed read sets.

Everything here is synchronous and quick (no body bytes pass through it); the app streams part bodies to
the file named by :meth:`State.part_tmp_path` and then calls :meth:`State.put_part`.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import json
import os
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import regex

from .errors import ApiError, not_found, validation
from .parsing import SOURCES, check_id, check_part_number, check_source
from .records import Completed, PartInfo, ReadSet, SequenceStore, StoredFile, Upload, now_utc

FILE_TYPES = ("FASTQ", "BAM", "CRAM", "UBAM")
TEXT_FIELDS = {"subjectId": 127, "sampleId": 127, "name": 127, "generatedFrom": 127, "description": 255}
# The model's pattern for these fields, [\p{L}||\p{M}||\p{Z}||\p{S}||\p{N}||\p{P}]+, matched against the whole value.
TEXT = regex.compile(r"[\p{L}\p{M}\p{Z}\p{S}\p{N}\p{P}]+")


def _text(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"{name} is required")
        return None
    limit = TEXT_FIELDS[name]
    if not isinstance(value, str) or not 1 <= len(value) <= limit or TEXT.fullmatch(value) is None:
        raise validation(f"{name} must be 1 to {limit} letters, marks, spaces, symbols, numbers or punctuation")
    return value


class State:
    """All sequence stores of one emulator, with parts and read sets under ``data_dir``.

    With a ``seed`` the store repeats itself: the ids it hands out and the key of its part checksums derive from
    the seed and the stable identity of what they name (an upload's fields and how many uploads with the same
    fields came before it in that store), never from a random draw or the order requests arrive in. Without one,
    ids are random as AWS's are.
    """

    def __init__(self, data_dir: Path, discard: bool, seed: int | None = None) -> None:
        self.data_dir = data_dir
        self.discard = discard
        self.seed = seed
        self.stores: dict[str, SequenceStore] = {}
        self._key = secrets.token_bytes(32) if seed is None else _derived(seed, "checksum key", digest_size=32)
        self._serial = itertools.count(1)
        # (store id, upload id) -> the upload's stable identity; kept after Complete or Abort for late retries.
        self._identities: dict[tuple[str, str], str] = {}
        self._occurrences: collections.Counter[str] = collections.Counter()

    def _new_id(self, kind: str, identity: str, taken: Callable[[str], bool]) -> str:
        """A fresh 18-digit id: random without a seed, else derived from the seed, ``kind`` and ``identity``."""
        if self.seed is None:
            return f"{secrets.randbelow(9 * 10**9) + 10**9}{next(self._serial):08d}"
        for n in itertools.count():
            number = int.from_bytes(_derived(self.seed, f"{kind}|{identity}|{n}"), "big")
            candidate = str(10**17 + number % (9 * 10**17))
            if not taken(candidate):
                return candidate
        raise AssertionError("unreachable")  # pragma: no cover

    # --- stable identities, for ids and fault decisions
    def upload_identity(self, store_id: str, upload_id: str) -> str:
        """The stable identity of an upload this store made; an id it never made stands for itself."""
        return self._identities.get((store_id, upload_id), upload_id)

    def read_set_identity(self, store_id: str, read_set_id: str) -> str:
        """The stable identity of a read set this store made; an id it never made stands for itself."""
        return self._identities.get((store_id, read_set_id), read_set_id)

    def _identify_upload(self, store_id: str, fields: dict[str, Any]) -> str:
        made_like_it = create_identity(store_id, fields)
        occurrence = self._occurrences[made_like_it]
        self._occurrences[made_like_it] += 1
        return upload_identity(store_id, fields, occurrence)

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
        fields = _upload_fields(body)
        token = _client_token(body)
        if token is not None:
            replay = _replay(store, token, fields)
            if replay is not None:
                return replay
        identity = self._identify_upload(store_id, fields)

        def taken(candidate: str) -> bool:
            seen = candidate in store.uploads or candidate in store.completed
            return seen or (self.data_dir / store_id / candidate).exists()

        upload_id = self._new_id("upload", identity, taken)
        self._identities[(store_id, upload_id)] = identity
        directory = self.data_dir / store_id / upload_id
        if not self.discard:
            directory.mkdir(parents=True, exist_ok=True)
        upload = Upload(store_id, upload_id, fields, now_utc(), directory)
        store.uploads[upload_id] = upload
        reply = upload.summary()
        if token is not None:
            store.tokens[token] = (fields, reply)
        return reply

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
    def complete(self, store_id: str, upload_id: str, body: dict[str, Any]) -> tuple[ReadSet, bool]:
        """Turn an upload into a read set (PROCESSING_UPLOAD); ``(read set, True)`` when it is new.

        An identical Complete of an upload already completed (its reply lost) answers the same read set;
        another parts list for it is refused.
        """
        store = self.store(store_id)
        check_id(upload_id, "uploadId")
        listed = _parts_list(body)
        again = _completed_again(store, upload_id, listed)
        if again is not None:
            return again, False
        upload = self.upload(store_id, upload_id)
        _check_listed_parts(upload, listed)
        files = _files_by_source(upload, listed)
        identity = self.upload_identity(store_id, upload_id)

        def taken(candidate: str) -> bool:
            return candidate in store.read_sets or self.read_set_dir(store_id, candidate).exists()

        read_set_id = self._new_id("read set", identity, taken)
        self._identities[(store_id, read_set_id)] = f"read set of {identity}"
        if not self.discard:
            _move_parts(files, self.read_set_dir(store_id, read_set_id))
        del store.uploads[upload_id]
        shutil.rmtree(upload.directory, ignore_errors=True)
        read_set = ReadSet(store_id, read_set_id, upload_id, upload.fields, now_utc(), files)
        store.read_sets[read_set_id] = read_set
        store.completed[upload_id] = Completed(_listed_set(listed), read_set_id)
        return read_set, True

    def read_set_dir(self, store_id: str, read_set_id: str) -> Path:
        return self.data_dir / store_id / "readsets" / read_set_id

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

    def stored_file(self, read_set: ReadSet, name: str, number: int) -> tuple[StoredFile, int, int]:
        """The file ``name`` of a read set and the (offset, length) of its part ``number``."""
        stored = read_set.files.get(name)
        if stored is None:
            raise not_found(f"read set {read_set.read_set_id} has no {name}")
        if number > stored.total_parts:
            raise ApiError(
                "RangeNotSatisfiableException",
                f"{name} of read set {read_set.read_set_id} has only {stored.total_parts} parts",
            )
        offset = (number - 1) * stored.part_size
        return stored, offset, min(stored.part_size, stored.length - offset)


def create_identity(store_id: str, body: object) -> str:
    """What identifies a Create request (its retries share it): the store and the body but its clientToken."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "clientToken"}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(body)
    return _digest(f"create|{store_id}|{text}")


def upload_identity(store_id: str, fields: dict[str, Any], occurrence: int = 0) -> str:
    """The stable identity of the ``occurrence``-th upload (0-based) a store made with these fields.

    Fault draws of requests about the upload hang on it, and with a seed so do its id and its read set's id.
    """
    return _digest(f"upload|{create_identity(store_id, fields)}|{occurrence}")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _derived(seed: int, label: str, digest_size: int = 8) -> bytes:
    return hashlib.blake2b(f"{seed}|{label}".encode(), digest_size=digest_size).digest()


def _upload_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The validated fields of a Create (all but clientToken), as the upload keeps them."""
    file_type = body.get("sourceFileType")
    if file_type not in FILE_TYPES:
        raise validation(f"sourceFileType must be one of {', '.join(FILE_TYPES)}, got {file_type!r}")
    fields: dict[str, Any] = {"sourceFileType": file_type}
    for name in TEXT_FIELDS:
        value = _text(body, name, required=name in ("subjectId", "sampleId", "name"))
        if value is not None:
            fields[name] = value
    arn = _reference_arn(body, file_type)
    if arn is not None:
        fields["referenceArn"] = arn
    tags = _tags(body)
    if tags is not None:
        fields["tags"] = tags
    return fields


def _reference_arn(body: dict[str, Any], file_type: str) -> str | None:
    arn = body.get("referenceArn")
    if arn is None:
        if file_type in ("BAM", "CRAM"):
            raise validation(f"referenceArn is required for {file_type} read sets")
        return None
    if not isinstance(arn, str) or not arn.startswith("arn:") or not 5 <= len(arn) <= 127:
        raise validation("referenceArn must match arn:.+ and be at most 127 characters")
    return arn


def _tags(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 128 and len(v) <= 256 for k, v in tags.items()
    ):
        raise validation("tags must map 1-128 character keys to 0-256 character values")
    return tags


def _client_token(body: dict[str, Any]) -> str | None:
    token = body.get("clientToken")
    if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 127):
        raise validation("clientToken must be 1 to 127 characters")
    return token


def _replay(store: SequenceStore, token: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The first reply to a Create with this clientToken, if any; refused when its fields differ."""
    known = store.tokens.get(token)
    if known is None:
        return None
    first_fields, first_reply = known
    if first_fields != fields:
        raise validation(
            "clientToken was already used for an upload with other parameters; a new upload needs a new clientToken"
        )
    return dict(first_reply)


def _listed_set(listed: dict[tuple[str, int], str]) -> frozenset[tuple[str, int, str]]:
    return frozenset((s, n, c) for (s, n), c in listed.items())


def _completed_again(store: SequenceStore, upload_id: str, listed: dict[tuple[str, int], str]) -> ReadSet | None:
    """The read set of an upload already completed with this very parts list; None if it was not completed."""
    done = store.completed.get(upload_id)
    if done is None:
        return None
    if _listed_set(listed) != done.parts:
        raise validation(
            f"upload {upload_id} was already completed as read set {done.read_set_id} with another parts list"
        )
    return store.read_sets[done.read_set_id]


def _check_listed_parts(upload: Upload, listed: dict[tuple[str, int], str]) -> None:
    """Every listed part was uploaded with that checksum, and every uploaded part is listed."""
    for (source, number), checksum in listed.items():
        stored = upload.parts.get((source, number))
        if stored is None:
            raise validation(f"{source} part {number} was never uploaded")
        if not hmac.compare_digest(stored.checksum.encode(), checksum.encode("utf-8", "surrogateescape")):
            raise validation(f"{source} part {number}: checksum does not match the uploaded part")
    missing = sorted(set(upload.parts) - set(listed))
    if missing:
        source, number = missing[0]
        raise validation(f"{source} part {number} was uploaded but is missing from the parts list")


def _files_by_source(upload: Upload, listed: dict[tuple[str, int], str]) -> dict[str, list[PartInfo]]:
    """The listed parts per source in order, each source numbered 1..N; SOURCE1 always, SOURCE2 only for FASTQ."""
    files: dict[str, list[PartInfo]] = {}
    for source in SOURCES:
        numbers = sorted(n for s, n in listed if s == source)
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
    return files


def _move_parts(files: dict[str, list[PartInfo]], target: Path) -> None:
    target.mkdir(parents=True)
    for parts in files.values():
        for part in parts:
            assert part.path is not None
            moved = target / part.path.name
            os.replace(part.path, moved)
            part.path = moved


def _parts_list(body: dict[str, Any]) -> dict[tuple[str, int], str]:
    """Complete's parts as {(source, number): checksum}, each entry well formed and listed once."""
    listed = body.get("parts")
    if not isinstance(listed, list) or not listed:
        raise validation("parts must list every uploaded part")
    parts: dict[tuple[str, int], str] = {}
    for item in listed:
        if not isinstance(item, dict):
            raise validation("each entry of parts needs partNumber, partSource and checksum")
        source = check_source(item.get("partSource"))
        number = check_part_number(item.get("partNumber"))
        checksum = item.get("checksum")
        if not isinstance(checksum, str):
            raise validation(f"{source} part {number}: checksum is required")
        if (source, number) in parts:
            raise validation(f"{source} part {number} is listed more than once")
        parts[(source, number)] = checksum
    return parts


def _parse_time(value: object) -> datetime:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError) as exc:
            raise ValueError(value) from exc
    if not isinstance(value, str):
        raise TypeError(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["ApiError", "State", "create_identity", "upload_identity"]
