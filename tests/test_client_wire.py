"""OmicsClient over real HTTP against the local store: the whole life of an upload, byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from async_uploader.core import errors
from async_uploader.core.config import FileType, ReadSet, ServiceConfig, Source
from async_uploader.edge.client import OmicsClient
from async_uploader.edge.signing import CredentialSource, Signer
from async_uploader.edge.transport import HttpTransport
from async_uploader.emulator import LocalStore
from tests.helpers import fastq_gz

STORE = "1234567890"
PART = 128 * 1024
SLICE = 16 * 1024


class Slices:
    """A BodySource over a bytes object, offered as memoryview slices."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    async def slices(self) -> AsyncIterator[bytes | memoryview]:
        view = memoryview(self.data)
        for start in range(0, len(view), SLICE):
            yield view[start : start + SLICE]


def fastq(size: int, seed: int) -> bytes:
    """A gzip FASTQ of exactly ``size`` bytes (the store takes FASTQ gzip-compressed only, as the service)."""
    return fastq_gz(size, seed)


def client_for(store: LocalStore, secret: str = "test") -> OmicsClient:
    service = ServiceConfig(endpoint_url=store.url, connect_timeout=5, read_timeout=30)
    signer = Signer(CredentialSource.static("test", secret), "us-east-1")
    return OmicsClient(service, transport=HttpTransport(limit=8), signer=signer)


def paired() -> ReadSet:
    return ReadSet(
        source1=Path("r1.fastq"),
        source2=Path("r2.fastq"),
        file_type=FileType.FASTQ,
        subject_id="subject",
        sample_id="sample",
        name="wire test",
        description="both sources",
        tags={"suite": "wire"},
    )


async def test_full_upload_round_trip(local_store: LocalStore) -> None:
    data = {Source.SOURCE1: fastq(3 * PART + 17, 1), Source.SOURCE2: fastq(2 * PART - 1, 2)}
    async with client_for(local_store) as client:
        created = await client.create_upload(STORE, paired(), "token-wire-1")
        upload_id = created.upload_id

        async def send(source: Source, number: int) -> tuple[Source, int, str]:
            start = (number - 1) * PART
            body = Slices(data[source][start : start + PART])
            return source, number, await client.upload_part(STORE, upload_id, source, number, body)

        jobs = [
            send(source, number)
            for source, blob in data.items()
            for number in range(1, (len(blob) + PART - 1) // PART + 1)
        ]
        sent = await asyncio.gather(*jobs)
        assert len(sent) == 6

        uploads = await client.list_uploads(STORE, max_results=1)
        assert upload_id in {u.upload_id for u in uploads}
        mine = next(u for u in uploads if u.upload_id == upload_id)
        assert (mine.name, mine.source_file_type, dict(mine.tags)) == ("wire test", "FASTQ", {"suite": "wire"})

        listed = []
        for source in data:
            listed += await client.list_parts(STORE, upload_id, source, max_results=1)
        assert sorted((p.source, p.number, p.checksum) for p in listed) == sorted(sent)
        sizes = {(p.source, p.number): p.size for p in listed}
        assert sizes[(Source.SOURCE1, 4)] == 17 and sizes[(Source.SOURCE2, 2)] == PART - 1

        read_set_id = await client.complete_upload(STORE, upload_id, list(reversed(sent)))
        for _ in range(400):  # the store checks the format, then reports ACTIVE
            metadata = await client.get_read_set_metadata(STORE, read_set_id)
            if metadata.status != "PROCESSING_UPLOAD":
                break
            await asyncio.sleep(0.025)
        assert metadata.status == "ACTIVE", metadata.status_message
        assert metadata.id == read_set_id and metadata.name == "wire test"

        for source, blob in data.items():
            count = (len(blob) + PART - 1) // PART
            pieces = [await client.download_part(STORE, read_set_id, source, n) for n in range(1, count + 1)]
            assert b"".join(pieces) == blob
        assert upload_id not in {u.upload_id for u in await client.list_uploads(STORE)}


async def test_abort_then_upload_is_gone(local_store: LocalStore) -> None:
    async with client_for(local_store) as client:
        upload_id = (await client.create_upload(STORE, paired(), "token-wire-2")).upload_id
        await client.upload_part(STORE, upload_id, Source.SOURCE1, 1, Slices(fastq(1000, 3)))
        await client.abort_upload(STORE, upload_id)
        with pytest.raises(errors.ResourceNotFoundError):
            await client.list_parts(STORE, upload_id, Source.SOURCE1)


async def test_wrong_secret_is_access_denied(local_store: LocalStore) -> None:
    async with client_for(local_store) as good:
        upload_id = (await good.create_upload(STORE, paired(), "token-wire-3")).upload_id
    async with client_for(local_store, secret="wrong") as bad:
        with pytest.raises(errors.AccessDeniedError) as caught:
            await bad.create_upload(STORE, paired(), "token-wire-4")
        assert caught.value.status == 403 and not caught.value.retryable
        with pytest.raises(errors.AccessDeniedError):
            await bad.upload_part(STORE, upload_id, Source.SOURCE1, 1, Slices(fastq(4 * PART, 4)))
        with pytest.raises(errors.AccessDeniedError):
            await bad.list_uploads(STORE)


async def test_unknown_upload_is_not_found(local_store: LocalStore) -> None:
    async with client_for(local_store) as client:
        with pytest.raises(errors.ResourceNotFoundError) as caught:
            await client.upload_part(STORE, "11111111111", Source.SOURCE1, 1, Slices(b"@r\nA\n+\nI\n"))
        assert caught.value.operation == "UploadReadSetPart" and caught.value.message
