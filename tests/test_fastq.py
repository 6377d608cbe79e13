"""The local side of end-to-end verification: FASTQ ETag digests, read and base counts, and the file-type check,
against hashlib and gzip themselves, whatever the chunking, with every inflater and counter."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from async_uploader import FileType
from async_uploader.core.fastq import (
    FastqSummary,
    FastqSummer,
    NotFastqError,
    RecordCounter,
    check_file_type,
    inflater_name,
)
from tests.helpers import fastq_text, gzip_members

Backend = tuple[str, bool, int]
BACKENDS: list[Backend] = [("zlib", False, 0), ("zlib", True, 0), ("isal", True, 0), ("isal", True, 3000)]
"""(inflater, counting with numpy, after how many bytes of text): split alone, numpy from the start, numpy taking
over part-way through a source."""


def backend_id(backend: Backend) -> str:
    counter = "split" if not backend[1] else "numpy" if not backend[2] else f"numpy-after-{backend[2]}"
    return f"{backend[0]}-{counter}"


def summarize(data: bytes, family: str = "MD5up", chunk: int = 1 << 20, backend: Backend = BACKENDS[2]) -> FastqSummary:
    summer = FastqSummer(family, inflater=backend[0], vectorized=backend[1], vector_after=backend[2])
    for start in range(0, len(data), chunk):
        summer.update(data[start : start + chunk])
    return summer.finish()


def truth(data: bytes) -> tuple[int, int]:
    lines = data.replace(b"\r\n", b"\n").split(b"\n")[:-1]
    return len(lines) // 4, sum(len(line) for line in lines[1::4])


@pytest.mark.parametrize("backend", BACKENDS, ids=backend_id)
@pytest.mark.parametrize("form", ["plain", "gzip", "three members", "bgzf-like 64 KiB members"])
def test_digest_and_counts_equal_the_uncompressed_bytes(backend: Backend, form: str) -> None:
    raw = fastq_text(3000, seed=1)
    data = {
        "plain": raw,
        "gzip": gzip.compress(raw),
        "three members": gzip_members(raw, 3),
        "bgzf-like 64 KiB members": gzip_members(raw, -(-len(raw) // 65280)),
    }[form]
    summary = summarize(data, backend=backend, chunk=7777)
    assert summary.digest == hashlib.md5(raw).hexdigest()
    assert (summary.reads, summary.bases) == truth(raw)
    assert summary.algorithm == "FASTQ_MD5up"


@pytest.mark.parametrize(("family", "name"), [("SHA256up", "sha256"), ("SHA512up", "sha512")])
def test_the_other_families(family: str, name: str) -> None:
    raw = fastq_text(100)
    summary = summarize(gzip_members(raw, 2), family)
    assert summary.digest == hashlib.new(name, raw).hexdigest() and summary.algorithm == f"FASTQ_{family}"


@settings(max_examples=60, deadline=None)
@given(chunk=st.integers(1, 5000), reads=st.integers(1, 40), crlf=st.booleans(), seed=st.integers(0, 99))
def test_any_chunking_gives_the_same_answer(chunk: int, reads: int, crlf: bool, seed: int) -> None:
    raw = fastq_text(reads, seed=seed, length=30, crlf=crlf)
    data = gzip_members(raw, 2)
    for backend in BACKENDS:
        summary = summarize(data, chunk=chunk, backend=backend)
        assert (summary.digest, summary.reads, summary.bases) == (hashlib.md5(raw).hexdigest(), *truth(raw))


@pytest.mark.parametrize("backend", BACKENDS, ids=backend_id)
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (fastq_text(10)[:-40], "do not make whole four-line records|bases but"),
        (b"@r\nACGT\n-\nIIII\n", "separator"),
        (b"r\nACGT\n+\nIIII\n", "does not start with '@'"),
        (b"@r\nACGT\n+\nIII\n", "3 quality values"),
        (gzip.compress(fastq_text(10))[:-10], "ends early|not a valid gzip"),
        (b"\x1f\x8b" + bytes(100), "not a valid gzip"),
        (b"", "no FASTQ records"),
    ],
)
def test_what_is_not_fastq_says_so(backend: Backend, data: bytes, why: str) -> None:
    with pytest.raises(NotFastqError, match=why):
        summarize(data, backend=backend, chunk=9)


def counted(raw: bytes, cuts: list[int], vectorized: bool, shuffle: random.Random | None = None) -> object:
    """Reads and bases of ``raw`` cut at ``cuts``, or the error: each piece scanned (in any order) then added."""
    counter = RecordCounter(vectorized=vectorized)
    bounds = [0, *sorted(cuts), len(raw)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    order = list(range(len(pieces)))
    if shuffle is not None:
        shuffle.shuffle(order)
    scans = {n: counter.scan(pieces[n]) for n in order}
    try:
        for n in range(len(pieces)):
            counter.add(scans[n])
        return counter.finish()
    except NotFastqError as exc:
        return str(exc)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 999),
    reads=st.integers(1, 30),
    crlf=st.booleans(),
    flaw=st.sampled_from(["none", "head", "plus", "empty line", "short quality", "extra line"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_scans_in_any_order_count_as_the_whole_text(
    seed: int, reads: int, crlf: bool, flaw: str, cuts: list[int]
) -> None:
    rng = random.Random(seed)
    lines = fastq_text(reads, seed=seed, length=40, crlf=crlf).split(b"\n")[:-1]
    at = rng.randrange(len(lines) // 4) * 4
    which = rng.choice([0, 2])
    if flaw == "head" or (flaw == "empty line" and which == 0):
        lines[at] = b"x" + lines[at][1:] if flaw == "head" else b""
        why = f"a record after line {at} does not start with '@'"
    elif flaw == "plus" or flaw == "empty line":
        lines[at + 2] = b"-" + lines[at + 2][1:] if flaw == "plus" else b""
        why = f"a record after line {at} has no '+' separator line"
    elif flaw == "short quality":
        lines[at + 3] = lines[at + 3][1:]
    elif flaw == "extra line":
        lines.insert(at + 4, lines[at + 3])
    raw = b"\n".join(lines) + b"\n"
    cuts = [cut % (len(raw) + 1) for cut in cuts]
    alone = counted(raw, [], vectorized=False)
    if flaw == "none":
        assert alone == truth(raw)
    elif flaw in ("head", "plus", "empty line"):
        assert alone == why  # the first wrong record, wherever the text is cut
    else:
        assert isinstance(alone, str)
    # the same answer, errors word for word, with numpy or without, whatever the cuts and the order of the scans
    assert counted(raw, cuts, vectorized=False) == counted(raw, cuts, vectorized=True, shuffle=rng) == alone
    assert counted(raw, cuts, vectorized=True) == alone


def test_the_faster_inflater_is_used_where_installed() -> None:
    assert inflater_name() == "isal"  # the fast extra is installed for the tests


BAM_HEAD = gzip.compress(b"BAM\x01" + bytes(100))


@pytest.mark.parametrize(
    ("head", "file_type", "why"),
    [
        (gzip.compress(fastq_text(5)), FileType.FASTQ, None),
        (fastq_text(5), FileType.FASTQ, None),
        (BAM_HEAD, FileType.BAM, None),
        (BAM_HEAD, FileType.UBAM, None),
        (b"CRAM\x03\x00" + bytes(20), FileType.CRAM, None),
        (BAM_HEAD, FileType.FASTQ, "is a BAM file"),
        (b"CRAM\x03\x00", FileType.FASTQ, "is a CRAM file"),
        (gzip.compress(b"hello world\n"), FileType.FASTQ, "first line does not start with '@'"),
        (gzip.compress(fastq_text(5)), FileType.BAM, "does not hold the BAM magic"),
        (fastq_text(5), FileType.BAM, "not BGZF-compressed"),
        (BAM_HEAD, FileType.CRAM, "CRAM magic"),
        (b"@r\nACGT\n+\nIII\n", FileType.FASTQ, "record 1 is not a FASTQ record"),
    ],
)
def test_the_first_bytes_must_agree_with_the_file_type(head: bytes, file_type: FileType, why: str | None) -> None:
    found = check_file_type(head, file_type)
    assert (found is None) if why is None else (found is not None and why in found), found


def test_a_head_cut_inside_a_record_or_a_member_is_not_a_mismatch() -> None:
    data = gzip.compress(fastq_text(2000))
    assert check_file_type(data[: len(data) // 3], FileType.FASTQ) is None


@pytest.mark.parametrize("extra", ["", "\n", "@r\nAC", "@r\nACGT\n+\nIIII\n"])
def test_the_head_judges_its_first_records_whole_wherever_the_text_ends(extra: str) -> None:
    text = fastq_text(300) + extra.encode()
    assert check_file_type(text, FileType.FASTQ) is None
    bad = fastq_text(255) + b"@r\nACGT\n+\nIII\n" + fastq_text(3)
    assert "record 256 is not a FASTQ record" in (check_file_type(bad, FileType.FASTQ) or "")
    beyond = fastq_text(256) + b"@r\nACGT\n+\nIII\n"  # past the records a head is judged by: the verification's
    assert check_file_type(beyond, FileType.FASTQ) is None
