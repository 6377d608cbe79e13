"""The overlapped verifier (inflating in the caller's thread, hashing in one of its own, counting in either) gives
FastqSummer's answers, errors included, for every kind of FASTQ, whatever the chunking, the type of the buffers it
is fed and the thread that counts each piece; so does it with one core, all in the caller's thread."""

from __future__ import annotations

import gc
import gzip
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from async_uploader.core.fastq import FastqSummer, NotFastqError, TruncatedError
from async_uploader.engine import hashing
from async_uploader.engine.hashing import ThreadedSummer, summarize_path
from tests.helpers import fastq_gz, fastq_text, gzip_members

RAW = fastq_text(4000, seed=3)
FORMS = {
    "plain": RAW,
    "gzip": gzip.compress(RAW),
    "multi-member": gzip_members(RAW, 5),
    "bgzf-like": gzip_members(RAW, -(-len(RAW) // 65280)),
    "stored members": fastq_gz(300_000, seed=4),
}


BIG = fastq_text(30_000, seed=5)  # several slices of text
PLACES = ["scanned where the hasher is behind", "scanned by the hasher", "scanned here", "by turns", "one core"]


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Where each piece's lines are scanned: the rule itself, then each way forced (the answer must not depend on
    it), then the one-core summer that does all in the caller's thread."""
    turns = itertools.cycle([True, False])
    forced = {"scanned by the hasher": False, "scanned here": True}
    if request.param in forced:
        monkeypatch.setattr(ThreadedSummer, "_scan_here", staticmethod(lambda hasher: forced[request.param]))
    elif request.param == "by turns":
        monkeypatch.setattr(ThreadedSummer, "_scan_here", staticmethod(lambda hasher: next(turns)))
    monkeypatch.setattr(hashing, "overlapping", lambda: request.param != "one core")
    yield request.param


def corrupt(member: bytes) -> bytes:
    """``member`` with bytes past its middle overwritten: what inflates before them is good text."""
    middle = len(member) * 2 // 3
    return member[:middle] + bytes(200) + member[middle + 200 :]


def series(data: bytes, family: str) -> object:
    summer = FastqSummer(family)
    summer.update(data)
    return summer.finish()


@pytest.mark.parametrize("family", ["MD5up", "SHA256up", "SHA512up"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("chunk", [1, 4097, 3 << 20])
def test_the_same_answer_as_in_series(form: str, family: str, chunk: int, place: str) -> None:
    data = FORMS[form]
    if chunk == 1:  # a byte at a time: a few records are enough
        text = RAW[: RAW.index(b"\n@", 2000) + 1]
        data = text if form == "plain" else gzip_members(text, 3)
    summer = ThreadedSummer(family)
    for start in range(0, len(data), chunk):
        summer.update(memoryview(bytearray(data[start : start + chunk])))  # a reused buffer: copied when fed
    assert summer.finish() == series(data, family)
    assert (summer._hasher is None) == (place == "one core")


@pytest.mark.parametrize("form", ["plain", "gzip", "bgzf-like"])
def test_many_slices_the_same_answer_as_in_series(form: str, place: str) -> None:
    data = {"plain": BIG, "gzip": gzip.compress(BIG, 1), "bgzf-like": gzip_members(BIG, -(-len(BIG) // 65280))}[form]
    summer = ThreadedSummer("SHA256up")
    for start in range(0, len(data), 1 << 20):
        summer.update(data[start : start + (1 << 20)])
    assert summer.finish() == series(data, "SHA256up")


def test_a_file_and_no_thread_left_behind(tmp_path: Path) -> None:
    before = threading.active_count()
    for form, data in FORMS.items():
        path = tmp_path / form
        path.write_bytes(data)
        assert summarize_path(path, "MD5up") == summarize_path(path, "MD5up", threaded=False) == series(data, "MD5up")
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (gzip.compress(RAW)[:-100], TruncatedError),
        (gzip_members(RAW, 3)[:-5], TruncatedError),
        (RAW.replace(b"\n+\n", b"\n-\n", 1), NotFastqError),
        (RAW[:-1] + b"XX\n", NotFastqError),
        (b"\x1f\x8b" + bytes(100), NotFastqError),
        (b"", NotFastqError),
        (gzip.compress(BIG, 1)[: len(gzip.compress(BIG, 1)) // 2], TruncatedError),  # cut after slices were hashed
        (corrupt(gzip.compress(BIG, 1)), NotFastqError),  # a deflate block broken after slices were hashed
        (gzip.compress(BIG[:-5000] + b"@x\nAC\n-\nII\n" + BIG[-5000:], 1), NotFastqError),  # late, in a later slice
    ],
    ids=[
        "truncated",
        "truncated member",
        "no separator",
        "uneven",
        "bad header",
        "empty",
        "cut late",
        "corrupt late",
        "bad record late",
    ],
)
def test_the_same_error_as_in_series(data: bytes, error: type[Exception], place: str) -> None:
    summer = ThreadedSummer()
    for start in range(0, len(data), 50_000):
        summer.update(data[start : start + 50_000])
    with pytest.raises(error) as threaded:
        summer.finish()
    with pytest.raises(error) as alone:
        series(data, "MD5up")
    assert str(threaded.value) == str(alone.value)


def test_a_summer_given_up_ends_its_threads() -> None:
    before = threading.active_count()
    summer = ThreadedSummer(overlap=True)
    summer.update(gzip.compress(RAW)[:10_000])
    summer.close()
    summer.close()
    assert threading.active_count() == before


def test_a_summer_dropped_unfinished_ends_its_threads() -> None:
    before = threading.active_count()
    summer = ThreadedSummer(overlap=True)
    summer.update(gzip.compress(RAW)[:10_000])
    hasher = summer._hasher
    assert hasher is not None and threading.active_count() == before + 1
    del summer
    gc.collect()
    hasher._thread.join(timeout=10)
    assert threading.active_count() == before
