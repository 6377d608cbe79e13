"""The INDEX of BAM read sets is a real BAI (htslib, through pysam, reads regions with it); CRAM gets a marker."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pysam
import pytest

from async_uploader.emulator import LocalStore
from async_uploader.emulator.bai import BaiBuilder, NotIndexable, reg2bin
from tests.store_helpers import REFERENCE, STORE_ID, active, omics, upload_read_set

LENGTHS = (3_000_000, 500_000, 2_000)


def write_bam(path: Path, seed: int = 1) -> None:
    """A coordinate-sorted BAM over three references: spliced reads, placed unmapped reads, unplaced reads last."""
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": f"chr{i}", "LN": n} for i, n in enumerate(LENGTHS)],
    }
    rand = random.Random(seed)
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for ref, span in enumerate(LENGTHS[:2]):  # chr2 stays empty
            for i, pos in enumerate(sorted(rand.randrange(0, span - 200_000) for _ in range(1500))):
                read = pysam.AlignedSegment(out.header)
                length = rand.choice((50, 100, 150))
                read.query_name, read.reference_id, read.reference_start = f"r{ref}.{i}", ref, pos
                read.query_sequence = "".join(rand.choices("ACGT", k=length))
                read.query_qualities = pysam.qualitystring_to_array("I" * length)
                half = length // 2
                read.cigarstring = (
                    f"{half}M{rand.randint(1, 150_000)}N{length - half}M" if i % 40 == 0 else f"{length}M"
                )
                read.flag, read.mapping_quality = (4 if i % 97 == 0 else 0), 30
                out.write(read)
        for i in range(7):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.reference_id, read.reference_start, read.flag = f"u{i}", -1, -1, 4
            read.query_sequence, read.query_qualities = "ACGT", pysam.qualitystring_to_array("IIII")
            out.write(read)


def test_reg2bin_matches_the_specification_examples() -> None:
    assert reg2bin(0, 1) == 4681 and reg2bin(0, 1 << 14) == 4681 and reg2bin(0, (1 << 14) + 1) == 585
    assert reg2bin(0, 1 << 29) == 0 and reg2bin((1 << 26) - 1, 1 << 26) == 4681 + ((1 << 26) - 1 >> 14)


def test_bai_answers_region_queries_as_htslibs_own(tmp_path: Path) -> None:
    bam = tmp_path / "reads.bam"
    write_bam(bam)
    data = bam.read_bytes()
    builder = BaiBuilder()
    for start in range(0, len(data), 5000):  # pieces cut anywhere, as parts arrive
        builder.update(data[start : start + 5000])
    ours = tmp_path / "ours.bai"
    ours.write_bytes(builder.finish())
    pysam.index(str(bam))  # htslib's own reads.bam.bai
    with (
        pysam.AlignmentFile(str(bam), "rb", index_filename=str(ours)) as mine,
        pysam.AlignmentFile(str(bam), "rb", index_filename=f"{bam}.bai") as theirs,
    ):
        assert mine.get_index_statistics() == theirs.get_index_statistics()
        assert mine.mapped == theirs.mapped and mine.unmapped == theirs.unmapped
        rand = random.Random(2)
        found = 0
        for _ in range(200):
            ref = rand.randrange(3)
            start = rand.randrange(LENGTHS[ref])
            stop = min(LENGTHS[ref], start + rand.choice((1, 150, 20_000, 400_000)))
            got = sorted(str(r.query_name) for r in mine.fetch(f"chr{ref}", start, stop))
            assert got == sorted(str(r.query_name) for r in theirs.fetch(f"chr{ref}", start, stop))
            found += len(got)
        assert found > 1000


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x1f\x8b\x08\x04" + bytes(300), "BC"),
        (b"plain text, no gzip at all", "BGZF"),
    ],
)
def test_what_gets_no_index(data: bytes, why: str) -> None:
    builder = BaiBuilder()
    with pytest.raises(NotIndexable, match=why):
        builder.update(data)
        builder.finish()


def test_unsorted_bam_gets_no_index(tmp_path: Path) -> None:
    path = tmp_path / "unsorted.bam"
    header = {"HD": {"VN": "1.6"}, "SQ": [{"SN": "chr0", "LN": 1000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for pos in (500, 100):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.reference_id, read.reference_start, read.cigarstring = "r", 0, pos, "4M"
            read.query_sequence, read.query_qualities = "ACGT", pysam.qualitystring_to_array("IIII")
            out.write(read)
    builder = BaiBuilder()
    with pytest.raises(NotIndexable, match="sorted"):
        builder.update(path.read_bytes())


def indexed(store: LocalStore, tmp: Path) -> None:
    client = omics(store)
    bam = tmp / "reads.bam"
    write_bam(bam, seed=3)
    data = bam.read_bytes()
    read_set = upload_read_set(
        client, {"SOURCE1": [data[:40_000], data[40_000:]]}, sourceFileType="BAM", referenceArn=REFERENCE
    )
    meta = active(client, read_set)
    index = meta["files"]["index"]
    assert index["totalParts"] == 1 and index["contentLength"] == index["partSize"] > 0
    got = client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="INDEX", partNumber=1)["payload"].read()
    assert got.startswith(b"BAI\x01") and len(got) == index["contentLength"]
    served = tmp / "served.bai"
    served.write_bytes(got)
    with pysam.AlignmentFile(str(bam), "rb", index_filename=str(served)) as reads:
        assert reads.mapped == sum(1 for r in pysam.AlignmentFile(str(bam), "rb") if not r.is_unmapped)
        assert reads.count("chr1", 0, LENGTHS[1]) > 0
    # Not a BAM behind the BGZF magic: ACTIVE (the format check reads the first bytes), but no index.
    junk = upload_read_set(
        client, {"SOURCE1": [b"\x1f\x8b\x08\x04" + os.urandom(3000)]}, sourceFileType="BAM", referenceArn=REFERENCE
    )
    assert "index" not in active(client, junk)["files"]
    # CRAM: a marker file, said to be one in its first bytes.
    cram = upload_read_set(
        client, {"SOURCE1": [b"CRAM\x03\x00" + os.urandom(500)]}, sourceFileType="CRAM", referenceArn=REFERENCE
    )
    assert "index" in active(client, cram)["files"]
    marker = client.get_read_set(sequenceStoreId=STORE_ID, id=cram, file="INDEX", partNumber=1)["payload"].read()
    assert marker.startswith(b"PLACEHOLDER INDEX") and b"not a CRAI" in marker


async def test_bam_read_set_index_served_as_file_index(local_store: LocalStore, tmp_path: Path) -> None:
    await asyncio.to_thread(indexed, local_store, tmp_path)
