"""ETags and sequence information of FASTQ read sets: the digest of the uncompressed source, exact counts."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from async_uploader.emulator import FaultOptions, LocalStore, StoreOptions
from async_uploader.emulator.etag import FastqDigest, NotFastq
from tests.store_helpers import STORE_ID, active, omics, upload_read_set

MakeStore = Callable[..., Awaitable[LocalStore]]


def records(n: int, seed: str) -> tuple[bytes, int]:
    """``n`` FASTQ records of varying lengths and their total base count."""
    rand = random.Random(seed)
    lengths = [rand.randint(1, 151) for _ in range(n)]
    text = "".join(
        f"@{seed}:{i} 1:N:0\n{''.join(rand.choices('ACGTN', k=k))}\n+\n{''.join(rand.choices('#,:FI', k=k))}\n"
        for i, k in enumerate(lengths)
    )
    return text.encode(), sum(lengths)


def bgzf(data: bytes, block: int = 30_000) -> bytes:
    """BGZF as SAMtools writes it: gzip members with a BC extra field giving the block size, then an empty EOF block."""
    out = bytearray()
    for start in range(0, len(data), block):
        piece = data[start : start + block]
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = deflater.compress(piece) + deflater.flush()
        out += struct.pack("<4BI2BH2BHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, 66, 67, 2, len(body) + 25)
        out += body + struct.pack("<II", zlib.crc32(piece), len(piece))
    out += bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    return bytes(out)


def digest_of(data: bytes, step: int, family: str = "MD5up") -> Any:
    digest = FastqDigest(family)
    for start in range(0, len(data), step):
        digest.update(data[start : start + step])
    return digest.finish()


@pytest.mark.parametrize("step", [1, 3, 4096, 10**7])
def test_digest_of_every_kind_of_fastq(step: int) -> None:
    text, bases = records(400 if step == 1 else 3000, "kinds")
    members = gzip.compress(text[:1000]) + gzip.compress(text[1000:9000]) + gzip.compress(text[9000:])
    for encoded in (text, gzip.compress(text), members, bgzf(text)):
        summary = digest_of(encoded, step)
        assert (summary.digest, summary.reads, summary.bases) == (
            hashlib.md5(text).hexdigest(),
            text.count(b"\n") // 4,
            bases,
        )
    assert digest_of(text, step, "SHA512up").digest == hashlib.sha512(text).hexdigest()
    # Windows line ends: the same counts (the digest is of the bytes as they are).
    summary = digest_of(text.replace(b"\n", b"\r\n"), step)
    assert (summary.reads, summary.bases) == (text.count(b"\n") // 4, bases)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x1f\x8b" + bytes(range(200)), "gzip"),
        (gzip.compress(b"@r\nAC\n+\nII\n")[:-4], "ends inside"),
        (gzip.compress(b"@r\nAC\n+\nII\n") + b"trailing", "gzip"),
        (b"@r\nAC\n+\nII\n@r2\nAC\n", "whole four-line records"),
        (b"@r\nACG\n+\nII\n", "quality"),
        (b"@r\nAC\n-\nII\n", "separator"),
        (b"r\nAC\n+\nII\n", "'@'"),
        (b"", "no FASTQ records"),
    ],
)
def test_what_is_not_fastq(data: bytes, why: str) -> None:
    with pytest.raises(NotFastq, match=why):
        digest_of(data, 5)


def refused_plain(store: LocalStore) -> None:
    client = omics(store)
    text, _ = records(100, "p")
    read_set = upload_read_set(client, {"SOURCE1": [text]})
    for _ in range(500):
        meta = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set)
        if meta["status"] != "PROCESSING_UPLOAD":
            break
        time.sleep(0.02)
    assert meta["status"] == "UPLOAD_FAILED"
    assert meta["statusMessage"] == "SOURCE1 is plain FASTQ: a FASTQ source must be gzip-compressed"


async def test_the_store_refuses_plain_fastq_as_the_service_does(local_store: LocalStore) -> None:
    await asyncio.to_thread(refused_plain, local_store)


def etag_flow(store: LocalStore, family: str = "MD5up") -> None:
    client = omics(store)
    text1, bases1 = records(5000, "r1")
    text2, bases2 = records(4000, "r2")
    # SOURCE1: three gzip members, the parts cut across member boundaries. SOURCE2: one member in two parts.
    one = gzip.compress(text1[:100_000]) + gzip.compress(text1[100_000:300_000]) + gzip.compress(text1[300_000:])
    cut = [one[:70_000], one[70_000:200_000], one[200_000:]]
    two = gzip.compress(text2)
    parts2 = [two[: len(two) // 2], two[len(two) // 2 :]]
    read_set = upload_read_set(client, {"SOURCE1": cut, "SOURCE2": parts2}, generatedFrom="sequencer")
    meta = active(client, read_set)
    algorithm = {"MD5up": hashlib.md5, "SHA256up": hashlib.sha256}[family]
    assert meta["etag"] == {
        "algorithm": f"FASTQ_{family}",
        "source1": algorithm(gzip.decompress(one)).hexdigest(),
        "source2": algorithm(text2).hexdigest(),
    }
    assert meta["sequenceInformation"] == {
        "totalReadCount": 9000,
        "totalBaseCount": bases1 + bases2,
        "generatedFrom": "sequencer",
    }


async def test_etag_and_counts_md5up(local_store: LocalStore) -> None:
    await asyncio.to_thread(etag_flow, local_store)


async def test_etag_family_sha256up(make_store: MakeStore) -> None:
    await asyncio.to_thread(etag_flow, await make_store(etag_family="SHA256up"), "SHA256up")


def single(store: LocalStore, data: bytes) -> dict[str, Any]:
    client = omics(store)
    return active(client, upload_read_set(client, {"SOURCE1": [data]}))


async def test_corrupt_etag_fault(make_store: MakeStore) -> None:
    text, _ = records(50, "c")
    store = await make_store(faults=FaultOptions(corrupt_etag=True))
    reported = (await asyncio.to_thread(single, store, bgzf(text)))["etag"]["source1"]
    right = hashlib.md5(text).hexdigest()
    assert reported != right and len(reported) == len(right)
    assert sum(a != b for a, b in zip(reported, right, strict=True)) == 1


async def test_discard_reports_no_etag(make_store: MakeStore) -> None:
    text, _ = records(50, "d")
    meta = await asyncio.to_thread(single, await make_store(discard=True), gzip.compress(text))
    assert "etag" not in meta and "sequenceInformation" not in meta
    assert meta["files"]["source1"]["contentLength"] == len(gzip.compress(text))


def test_store_options_refuse_unknown_family() -> None:
    with pytest.raises(ValueError, match="etag_family"):
        StoreOptions(etag_family="CRC32up")


@pytest.mark.parametrize("threads", [True, False])
@pytest.mark.parametrize("vectorised", [True, False])
def test_every_way_of_counting_gives_the_same_answer(
    threads: bool, vectorised: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from async_uploader.emulator import etag  # noqa: PLC0415

    if not vectorised:
        monkeypatch.setattr(etag, "_numpy", lambda: None)
    text, bases = records(3000, "ways")
    crlf = text.replace(b"\n", b"\r\n")
    for data, raw in ((bgzf(text), text), (crlf, crlf), (gzip.compress(text) * 1, text)):
        for step in (7, 65536, 10**7):
            digest = FastqDigest("MD5up", threads=threads)
            for start in range(0, len(data), step):
                digest.update(data[start : start + step])
            summary = digest.finish()
            assert (summary.digest, summary.reads, summary.bases) == (hashlib.md5(raw).hexdigest(), 3000, bases)
    for bad, why in (
        (b"@r\nAC\n+\nII\n" * 100_000 + b"@r\nACG\n+\nII\n", "quality"),
        (b"@r\n\n-\n\n" * 9, "separator"),
    ):
        digest = FastqDigest("MD5up", threads=threads)
        with pytest.raises(NotFastq, match=why):
            digest.update(bad)
            digest.finish()
