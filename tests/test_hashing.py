"""The overlapped verifier (inflating, hashing and counting in threads of their own) gives FastqSummer's answers,
errors included, for every kind of FASTQ, whatever the chunking and the type of the buffers it is fed."""

from __future__ import annotations

import gc
import gzip
import threading
from pathlib import Path

import pytest

from async_uploader.core.fastq import FastqSummer, NotFastqError, TruncatedError
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


def series(data: bytes, family: str) -> object:
    summer = FastqSummer(family)
    summer.update(data)
    return summer.finish()


@pytest.mark.parametrize("family", ["MD5up", "SHA256up", "SHA512up"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("chunk", [1, 4097, 3 << 20])
def test_the_same_answer_as_in_series(form: str, family: str, chunk: int) -> None:
    data = FORMS[form]
    if chunk == 1:  # a byte at a time: a few records are enough
        text = RAW[: RAW.index(b"\n@", 2000) + 1]
        data = text if form == "plain" else gzip_members(text, 3)
    summer = ThreadedSummer(family)
    for start in range(0, len(data), chunk):
        summer.update(memoryview(bytearray(data[start : start + chunk])))  # a reused buffer: copied when fed
    assert summer.finish() == series(data, family)


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
    ],
)
def test_the_same_error_as_in_series(data: bytes, error: type[Exception]) -> None:
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
    summer = ThreadedSummer()
    summer.update(gzip.compress(RAW)[:10_000])
    summer.close()
    summer.close()
    assert threading.active_count() == before


def test_a_summer_dropped_unfinished_ends_its_threads() -> None:
    before = threading.active_count()
    summer = ThreadedSummer()
    summer.update(gzip.compress(RAW)[:10_000])
    stages = summer._stages
    assert stages is not None and threading.active_count() == before + 2
    del summer
    gc.collect()
    for stage in stages:
        stage._thread.join(timeout=10)
    assert threading.active_count() == before
