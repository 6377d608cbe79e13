from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from async_uploader.core.checkpoint import (
    CheckpointHeader,
    PartRecord,
    Replay,
    legacy_checkpoint_name,
    replay,
    verify_resumable,
)
from async_uploader.core.config import FileType, ReadSet, Source
from async_uploader.core.errors import CheckpointBusyError, CheckpointError, CheckpointMismatchError, ConfigError
from async_uploader.core.plan import make_plan
from async_uploader.edge.journal import (
    CheckpointLock,
    Journal,
    check_checkpoint_path,
    default_checkpoint_path,
    load_checkpoint,
)
from async_uploader.edge.sources import fingerprint_file, fingerprint_source

S1, S2 = Source.SOURCE1, Source.SOURCE2
ODD_CHECKSUM = 'AbC+/=="\\\t\né𝄞 \x00end'


@pytest.fixture
def sources(tmp_path: Path) -> dict[Source, Path]:
    found = {}
    for source, size in ((S1, 300 * 1024 + 7), (S2, 1000)):
        path = tmp_path / f"{source.value.lower()}.fastq.gz"
        path.write_bytes(os.urandom(size))
        found[source] = path
    return found


def make_read_set(sources: dict[Source, Path]) -> ReadSet:
    return ReadSet(
        source1=sources[S1],
        source2=sources[S2],
        file_type=FileType.FASTQ,
        subject_id="subject-1",
        sample_id="sample-1",
        name="run 7",
        description="paired reads",
        tags={"project": "x"},
    )


def make_header(sources: dict[Source, Path], part_size: int = 1000) -> CheckpointHeader:
    return CheckpointHeader.from_read_set(
        "1234567890",
        make_read_set(sources),
        part_size=part_size,
        sources=[fingerprint_source(s, p) for s, p in sources.items()],
        client_token="token-123",
    )


def records(source: Source, numbers: range) -> list[PartRecord]:
    return [PartRecord(source, n, 1000, f"checksum-{source.value}-{n}", f"{n:016x}") for n in numbers]


def test_round_trip(tmp_path: Path, sources: dict[Source, Path]) -> None:
    header = make_header(sources)
    path = tmp_path / "deep" / "ck.jsonl"
    journal = Journal.create(path, header)
    assert load_checkpoint(path).upload_id is None
    journal.record_upload("0123456789")
    journal.record_parts(records(S1, range(1, 4)))
    journal.record_parts([PartRecord(S2, 1, 1000, ODD_CHECKSUM, "ff")])
    journal.record_parts([])
    journal.record_complete("9876543210")
    journal.close()
    loaded = load_checkpoint(path)
    assert loaded.header == header
    assert loaded.upload_id == "0123456789"
    assert loaded.read_set_id == "9876543210"
    assert loaded.parts == {(r.source, r.number): r for r in [*records(S1, range(1, 4))]} | {
        (S2, 1): PartRecord(S2, 1, 1000, ODD_CHECKSUM, "ff")
    }
    assert loaded.parts[(S2, 1)].checksum == ODD_CHECKSUM  # kept exactly


def test_file_mode_0600_and_no_secrets(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    old = os.umask(0)
    try:
        journal = Journal.create(path, make_header(sources))
        journal.record_upload("0123456789")
        journal.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text().splitlines()[0].rpartition("\t")[0])
    assert set(first) == {
        "t", "v", "store_id", "file_type", "subject_id", "sample_id", "name", "part_size", "sources",
        "client_token", "created", "reference_arn", "generated_from", "description", "tags",
    }  # fmt: skip
    assert not list(tmp_path.glob(".*.tmp"))


def test_create_replaces_existing(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    journal = Journal.create(path, make_header(sources))
    journal.record_upload("0123456789")
    journal.record_parts(records(S1, range(1, 3)))
    journal.close()
    Journal.create(path, make_header(sources, part_size=2000)).close()
    loaded = load_checkpoint(path)
    assert (loaded.header.part_size, loaded.upload_id, loaded.parts) == (2000, None, {})


def write_two_batches(path: Path, sources: dict[Source, Path]) -> tuple[int, int]:
    """Header, upload, batch 1..5, batch 6..10; return the byte offsets where the last line starts and ends."""
    journal = Journal.create(path, make_header(sources))
    journal.record_upload("0123456789")
    journal.record_parts(records(S1, range(1, 6)))
    start = path.stat().st_size
    journal.record_parts(records(S1, range(6, 11)))
    journal.close()
    return start, path.stat().st_size


@pytest.mark.parametrize("keep", [1, 2, 17, 0.5, -10, -9, -2, -1])
def test_torn_last_record_is_ignored(tmp_path: Path, sources: dict[Source, Path], keep: float) -> None:
    path = tmp_path / "ck.jsonl"
    start, end = write_two_batches(path, sources)
    cut = start + int(keep * (end - start)) if isinstance(keep, float) else (start + keep if keep > 0 else end + keep)
    with open(path, "r+b") as f:
        f.truncate(cut)
    loaded = load_checkpoint(path)
    assert loaded.upload_id == "0123456789"
    assert sorted(n for _, n in loaded.parts) == [1, 2, 3, 4, 5]


def test_corrupt_last_line_with_newline_is_ignored(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    start, _ = write_two_batches(path, sources)
    data = bytearray(path.read_bytes())
    data[start + 20] ^= 0x01
    path.write_bytes(bytes(data))
    assert len(load_checkpoint(path).parts) == 5


def test_corrupt_middle_line_raises(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    write_two_batches(path, sources)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"checksum-SOURCE1-3", b"checksum-SOURCE1-X")  # CRC no longer matches
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CheckpointError, match="line 3"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b'{"t":"hea', b"garbage\n"])
def test_no_header_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ck.jsonl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.jsonl")


def test_append_after_torn_tail(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    start, end = write_two_batches(path, sources)
    with open(path, "r+b") as f:
        f.truncate((start + end) // 2)
    journal, replayed = Journal.open(path)
    assert replayed.intact < path.stat().st_size
    journal.record_parts(records(S2, range(1, 3)))
    journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().endswith(b"\n")
    loaded = load_checkpoint(path)
    assert sorted(loaded.parts) == [(S1, n) for n in range(1, 6)] + [(S2, 1), (S2, 2)]
    assert loaded.intact == path.stat().st_size  # nothing left to cut


def test_new_upload_id_forgets_old_parts(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    journal = Journal.create(path, make_header(sources))
    journal.record_upload("1111111111")
    journal.record_parts(records(S1, range(1, 3)))
    journal.record_upload("1111111111")
    assert len(load_checkpoint(path).parts) == 2
    journal.record_upload("2222222222")
    journal.close()
    assert load_checkpoint(path).parts == {}


def test_later_record_of_a_part_wins(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    journal = Journal.create(path, make_header(sources))
    journal.record_parts([PartRecord(S1, 1, 10, "old", "d1")])
    journal.record_parts([PartRecord(S1, 1, 10, "new", "d2")])
    journal.close()
    assert load_checkpoint(path).parts[(S1, 1)].checksum == "new"


def test_20000_parts(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    journal = Journal.create(path, make_header(sources))
    journal.record_upload("0123456789")
    for first in range(1, 10_001, 1000):
        journal.record_parts(records(S1, range(first, first + 1000)))
        journal.record_parts(records(S2, range(first, first + 1000)))
    journal.close()
    loaded = load_checkpoint(path)
    assert len(loaded.parts) == 20_000
    assert loaded.parts[(S2, 10_000)].checksum == "checksum-SOURCE2-10000"
    plan = make_plan({S1: 10_000_000, S2: 10_000_000}, 1000)
    assert next(plan.parts(done=loaded.parts), None) is None


def verify(header: CheckpointHeader, files: dict[Source, Path], **overrides: object) -> frozenset[Source]:
    arguments: dict[str, object] = {
        "store_id": "1234567890",
        "read_set": make_read_set(files),
        "sources": [fingerprint_source(s, p) for s, p in files.items()],
        "part_size": header.part_size,
    }
    arguments.update(overrides)
    return verify_resumable(header, name="ck.jsonl", **arguments)  # type: ignore[arg-type]


def test_verify_resumable_accepts_unchanged_files_without_reading_them(sources: dict[Source, Path]) -> None:
    assert verify(make_header(sources), sources) == frozenset()


def test_an_edit_that_restores_the_mtime_still_marks_the_source_for_reading_again(sources: dict[Source, Path]) -> None:
    header = make_header(sources)
    path = sources[S1]
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the edit from the mtime check
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ctime_ns != before.st_ctime_ns
    assert verify(header, sources) == {S1}


def test_another_path_to_the_same_file_is_read_again_not_refused(sources: dict[Source, Path], tmp_path: Path) -> None:
    header = make_header(sources)
    elsewhere = tmp_path / "work2"
    elsewhere.mkdir()
    linked = {s: elsewhere / p.name for s, p in sources.items()}
    for source, link in linked.items():
        link.symlink_to(sources[source])
    assert verify(header, linked) == {S1, S2}  # same bytes through another path: proven by reading, not by name


def test_a_version_1_checkpoint_is_read_and_its_sources_are_read_again(sources: dict[Source, Path]) -> None:
    data = make_header(sources).to_json()
    data["v"] = 1
    for fingerprint in data["sources"]:
        for key in ("ctime_ns", "inode", "device"):
            del fingerprint[key]
    old = CheckpointHeader.from_json(data)
    assert old.sources[0].ctime_ns is None
    assert verify(old, sources) == {S1, S2}


def test_verify_resumable_refuses_size_change(sources: dict[Source, Path]) -> None:
    header = make_header(sources)
    with open(sources[S2], "ab") as f:
        f.write(b"more")
    with pytest.raises(
        CheckpointMismatchError, match=r"SOURCE2 .* \(size 1,000 → 1,004 bytes\); run again with --restart"
    ):
        verify(header, sources)
    with pytest.raises(CheckpointMismatchError, match="--restart"):
        verify(header, sources, sources=[fingerprint_source(S1, sources[S1])])
    with pytest.raises(CheckpointMismatchError, match="written for"):
        verify(header, sources, sources=[fingerprint_source(S1, sources[S1]), fingerprint_source(S2, sources[S1])])


def test_verify_resumable_refuses_another_store_read_set_or_part_size(sources: dict[Source, Path]) -> None:
    header = make_header(sources)
    with pytest.raises(CheckpointMismatchError, match="is for store 1234567890, not 1234567899"):
        verify(header, sources, store_id="1234567899")
    other = ReadSet(sources[S1], FileType.FASTQ, "subject-1", "sample-1", "run 8", source2=sources[S2])
    with pytest.raises(CheckpointMismatchError, match="another read set"):
        verify(header, sources, read_set=other)
    with pytest.raises(CheckpointMismatchError, match=r"1000-byte parts, not 2000"):
        verify(header, sources, part_size=2000)


def test_replay_is_a_plain_function_of_bytes(tmp_path: Path, sources: dict[Source, Path]) -> None:
    path = tmp_path / "ck.jsonl"
    write_two_batches(path, sources)
    replayed = replay(path.read_bytes(), "ck")
    assert isinstance(replayed, Replay) and len(replayed.parts) == 10 and replayed.intact == path.stat().st_size


def test_fingerprint_file_samples(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = bytearray(1024 * 1024)
    path.write_bytes(bytes(data))
    base = fingerprint_file(path, len(data))
    assert base == fingerprint_file(path, len(data))
    for offset in (0, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[offset] = 1
        path.write_bytes(bytes(changed))
        assert fingerprint_file(path, len(data)) != base
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert fingerprint_file(small, 3) != fingerprint_file(path, len(data))


def test_default_checkpoint_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASYNC_UPLOADER_HOME", str(tmp_path))
    identity = ("FASTQ", "s", "x", "n")
    one = default_checkpoint_path("1234567890", identity, [10, 20], ["a.fq", "b.fq"])
    assert one.parent == tmp_path / "checkpoints" and one.name.startswith("1234567890-r")
    # Named by the read set and its sizes, not by where the files are: a staged copy finds the same checkpoint.
    assert one == default_checkpoint_path("1234567890", identity, [10, 20], ["/elsewhere/a.fq", "/x/b.fq"])
    assert one != default_checkpoint_path("1234567899", identity, [10, 20], ["a.fq", "b.fq"])
    assert one != default_checkpoint_path("1234567890", identity, [10, 21], ["a.fq", "b.fq"])
    assert one != default_checkpoint_path("1234567890", ("FASTQ", "s", "x", "other"), [10, 20], ["a.fq", "b.fq"])
    # A checkpoint an earlier version named from the paths is still found while it exists.
    legacy = (
        tmp_path
        / "checkpoints"
        / legacy_checkpoint_name("1234567890", [os.path.abspath("a.fq"), os.path.abspath("b.fq")], identity)
    )
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"")
    assert default_checkpoint_path("1234567890", identity, [10, 20], ["a.fq", "b.fq"]) == legacy
    monkeypatch.delenv("ASYNC_UPLOADER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_checkpoint_path("1234567890", identity, [1], ["a.fq"]).parent == (
        tmp_path / "home" / ".cache" / "async-uploader" / "checkpoints"
    )


def test_a_home_that_is_a_file_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("ASYNC_UPLOADER_HOME", str(home))
    with pytest.raises(ConfigError, match=r"ASYNC_UPLOADER_HOME .* is a file, not a folder"):
        default_checkpoint_path("1234567890", (), [1], ["a.fq"])


def test_only_checkpoints_are_ever_replaced(tmp_path: Path, sources: dict[Source, Path]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(ConfigError, match="is not a checkpoint of async-uploader; it is left as it is"):
        check_checkpoint_path(notes, list(sources.values()))
    assert notes.read_text() == "my notes\n"
    with pytest.raises(ConfigError, match="is the source"):
        check_checkpoint_path(sources[S1], list(sources.values()))
    with pytest.raises(ConfigError, match="is a folder"):
        check_checkpoint_path(tmp_path, [])
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_checkpoint_path(notes / "ck.jsonl", [])
    assert check_checkpoint_path(tmp_path / "new.jsonl", []) is False
    ours = tmp_path / "ours.jsonl"
    Journal.create(ours, make_header(sources)).close()
    assert check_checkpoint_path(ours, list(sources.values())) is True


def test_one_owner_per_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck.jsonl"
    first = CheckpointLock(checkpoint)
    first.acquire()
    with pytest.raises(CheckpointBusyError, match=rf"already being uploaded by PID {os.getpid()} on "):
        CheckpointLock(checkpoint).acquire()
    first.release()
    assert not first.path.exists()
    again = CheckpointLock(checkpoint)
    again.acquire()
    again.release()
    foreign = tmp_path / "x.jsonl.lock"
    foreign.write_text("somebody else's file")
    with pytest.raises(ConfigError, match="is not a lock of async-uploader"):
        CheckpointLock(tmp_path / "x.jsonl").acquire()
    assert foreign.read_text() == "somebody else's file"
