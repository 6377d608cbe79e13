"""Crash and resume, end to end: a real ``async-uploader upload`` process against a store in another process.

The uploader is killed (SIGKILL) or interrupted (SIGINT) at points made exact by a relay between it and the store,
which holds part requests past a count, a Complete, or the store's answer to it, and by watching the store's
JSON-lines request log (one line per finished request) and the uploader's checkpoint journal: no kill waits a guessed
time or races the upload. The same command is then run again and must finish the same upload: exit 0, the read set
id on stdout, the bytes back through GetReadSet, exactly one CreateMultipartReadSetUpload, and no more parts sent
twice than could have been in flight at the kill.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.helpers import fastq_plain, upload_argv

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
STORE_ID = "1234567890"
PART_SIZE = 64 * 1024
CONCURRENCY = 4
# 24 + 21 parts; SOURCE2 ends with a short part.
SIZES = {"SOURCE1": 24 * PART_SIZE, "SOURCE2": 20 * PART_SIZE + 777}
TOTAL_PARTS = sum(math.ceil(size / PART_SIZE) for size in SIZES.values())
WAIT = 60.0  # every wait in this file gives up after this many seconds (an upload takes a few on an idle machine)
POLL = 0.002
# Each connection is paced so an upload lasts about a second (the relay makes the kill points exact regardless).
SLOW = ("--latency-ms", "5", "--connection-mbps", "2")

PART_OP = "UploadReadSetPart"
CREATE_OP = "CreateMultipartReadSetUpload"
COMPLETE_OP = "CompleteMultipartReadSetUpload"


def deadline_loop(what: str, timeout: float = WAIT) -> Iterator[None]:
    """Yield until the caller breaks out; fail the test with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
        time.sleep(POLL)
    pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")


def source_bytes(size: int, seed: int) -> bytes:
    """Plain FASTQ of exactly ``size`` bytes, random everywhere: a base can be changed in place and it stays FASTQ."""
    return fastq_plain(size, seed + 1)


class RequestLog:
    """The store's request log, read incrementally; only whole lines count."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def refresh(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return self.records
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        self.records.extend(json.loads(line) for line in lines if line.strip())
        return self.records

    def ops(self, operation: str, status: int | None = 200) -> list[dict[str, Any]]:
        return [r for r in self.refresh() if r["operation"] == operation and (status is None or r["status"] == status)]

    def acked_parts(self) -> int:
        return len(self.ops(PART_OP))

    def resent_parts(self) -> dict[tuple[str, int], int]:
        """(source, partNumber) → how many times the store acknowledged it, for parts acknowledged more than once."""
        counts = Counter((r["source"], r["part_number"]) for r in self.ops(PART_OP))
        return {key: n for key, n in counts.items() if n > 1}


def checkpoint_records(path: Path) -> list[dict[str, Any]]:
    """The uploader's journal, each line checked against its CRC32; a torn last line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n"):
        text, tab, crc = line.rpartition(b"\t")
        if tab and len(crc) == 8 and int(crc, 16) == zlib.crc32(text):
            records.append(json.loads(text))
    return records


def checkpoint_parts(path: Path | None) -> int:
    """How many parts the uploader's journal records as acknowledged."""
    assert path is not None
    return sum(len(r["p"]) for r in checkpoint_records(path) if r.get("t") == "parts")


def recorded_numbers(path: Path | None, source: str) -> set[int]:
    assert path is not None
    return {p[1] for r in checkpoint_records(path) if r.get("t") == "parts" for p in r["p"] if p[0] == source}


REQUEST_LINE = re.compile(rb"(?:PUT|POST) /sequencestore/\d+/upload/\d+/(part|complete)[ ?]")


class Relay:
    """A TCP relay on 127.0.0.1 between the uploader and the store that holds traffic at exact points.

    ``parts`` lets that many UploadReadSetPart requests through and holds every later one (its connection's bytes
    stop at its request line); ``complete`` "request" holds each Complete, "reply" lets it through and keeps the
    store's answer from the uploader. ``complete_sent`` is set once a Complete reaches the relay. When the uploader's
    end of a connection closes (it was killed), held bytes are dropped, or with ``forward_held`` sent on to the store
    then. ``release()`` sends what is held on open connections and lets everything through from then on.
    """

    def __init__(
        self, port: int, *, parts: int | None = None, complete: str | None = None, forward_held: bool = False
    ) -> None:
        self.port = port
        self.parts_allowed = parts
        self.complete = complete
        self.forward_held = forward_held
        self.parts_seen = 0
        self.complete_sent = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _holds(self, kind: bytes) -> bool:
        """Whether a request of ``kind`` (part or complete) arriving now is held; counts it."""
        with self._lock:
            if kind == b"complete":
                self.complete_sent.set()
                return self.complete == "request" and not self.released.is_set()
            self.parts_seen += 1
            allowed = self.parts_allowed
            return allowed is not None and self.parts_seen > allowed and not self.released.is_set()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.port))
        except OSError:
            client.close()
            return
        with client, upstream, contextlib.suppress(OSError):  # the store's end went away: so does the connection
            self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        held_up = b""  # uploader -> store, held
        hold_down = False  # this connection carried a Complete whose answer is kept from the uploader
        tail = b""  # the last bytes from the uploader, for a request line split across reads
        while not self._closing.is_set():
            if held_up and self.released.is_set():
                upstream.sendall(held_up)
                held_up = b""
            ready, _, _ = select.select([client, upstream], [], [], 0.05)
            if client in ready:
                try:
                    data = client.recv(256 * 1024)
                except ConnectionError:  # the uploader was killed
                    data = b""
                if not data:
                    if held_up and self.forward_held:
                        upstream.sendall(held_up)
                        upstream.shutdown(socket.SHUT_WR)
                        select.select([upstream], [], [], WAIT)
                    return
                if held_up:
                    held_up += data
                else:
                    scan = tail + data
                    for match in REQUEST_LINE.finditer(scan):
                        if match.end() <= len(tail):
                            continue  # seen in an earlier read
                        kind = match.group(1)
                        hold_down = hold_down or (kind == b"complete" and self.complete == "reply")
                        if self._holds(kind):
                            split = max(0, match.start() - len(tail))
                            upstream.sendall(data[:split])
                            held_up, data = data[split:], b""
                            break
                    if data:
                        upstream.sendall(data)
                tail = (tail + data)[-128:] if not held_up else b""
            if upstream in ready:
                answer = upstream.recv(256 * 1024)
                if not answer:
                    return
                if not hold_down or self.released.is_set():
                    with contextlib.suppress(OSError):  # the uploader may be gone: the answer goes nowhere
                        client.sendall(answer)


@dataclass
class Store:
    url: str
    log: RequestLog
    process: subprocess.Popen[bytes]


@dataclass
class Harness:
    """Sources, a checkpoint path, the environment and the processes of one test."""

    tmp: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    store: Store | None = None
    relay: Relay | None = None
    run_number: int = 0

    def __post_init__(self) -> None:
        self.sources = {name: self.tmp / f"{name.lower()}.fastq.gz" for name in SIZES}
        self.contents = {name: source_bytes(size, seed) for seed, (name, size) in enumerate(SIZES.items())}
        for name, path in self.sources.items():
            path.write_bytes(self.contents[name])
        self.checkpoint: Path | None = self.tmp / "ck" / "upload.ckpt"

    def start_store(self, *options: str) -> Store:
        log_path = self.tmp / "store.jsonl"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "async_uploader.emulator",
                "--port",
                "0",
                "--log",
                str(log_path),
                "--data-dir",
                str(self.tmp / "store-data"),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
            cwd=REPO_ROOT,
        )
        self.processes.append(process)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], WAIT)
        assert ready, f"the store printed no URL within {WAIT:.0f} s"
        url = process.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), f"unexpected store URL line {url!r}"
        self.store = Store(url, RequestLog(log_path), process)
        return self.store

    def start_relay(self, **holds: Any) -> Relay:
        """Put a :class:`Relay` between the uploads and the store (for every run: the command stays the same)."""
        assert self.store is not None
        self.relay = Relay(int(self.store.url.rsplit(":", 1)[1]), **holds)
        return self.relay

    def argv(self, *extra: str) -> list[str]:
        """The upload command; ``checkpoint`` None leaves the checkpoint to its default path."""
        assert self.store is not None
        options = ["--region", "us-east-1", "--part-size", "64KiB", "--max-concurrency", str(CONCURRENCY)]
        if self.checkpoint is not None:
            options += ["--checkpoint", str(self.checkpoint)]
        sources = [self.sources["SOURCE1"], self.sources["SOURCE2"]]
        endpoint = self.relay.url if self.relay is not None else self.store.url
        return upload_argv(endpoint, *sources, extra=(*options, *extra))

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "async_uploader", *self.argv(*extra)]

    def start_upload(self, *extra: str) -> subprocess.Popen[bytes]:
        self.run_number += 1
        out = (self.tmp / f"run{self.run_number}.out").open("wb")
        err = (self.tmp / f"run{self.run_number}.err").open("wb")
        with out, err:
            process = subprocess.Popen(self.command(*extra), stdout=out, stderr=err, env=self.env, cwd=REPO_ROOT)
        self.processes.append(process)
        return process

    def outputs(self) -> tuple[str, str]:
        """stdout and stderr of the latest upload run."""
        n = self.run_number
        return (self.tmp / f"run{n}.out").read_text(), (self.tmp / f"run{n}.err").read_text()

    def run_upload(self, *extra: str, command: list[str] | None = None) -> tuple[int, str, str]:
        """Run an upload to the end (bounded), the relay holding nothing; returns exit code, stdout, stderr."""
        if self.relay is not None:
            self.relay.release()
        self.run_number += 1
        try:
            done = subprocess.run(
                command or self.command(*extra), capture_output=True, env=self.env, cwd=REPO_ROOT, timeout=WAIT
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the upload did not finish within {WAIT:.0f} s")
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def wait_until(self, process: subprocess.Popen[bytes], ready: Callable[[Harness], bool], what: str) -> None:
        """Poll ``ready`` until true; fail if the upload exits first or the wait runs out."""
        for _ in deadline_loop(what):
            if ready(self):
                return
            if process.poll() is not None:
                out, err = self.outputs()
                pytest.fail(f"the upload exited ({process.returncode}) before {what}:\n{out}\n{err}")

    def wait_exit(self, process: subprocess.Popen[bytes]) -> int:
        try:
            return process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the upload did not exit within {WAIT:.0f} s")

    def read_back(self, read_set_id: str) -> dict[str, bytes]:
        """Every source of the read set, downloaded part by part through GetReadSet (boto3)."""
        assert self.store is not None
        client = boto3.client(
            "omics",
            endpoint_url=self.store.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
        )
        try:
            for _ in deadline_loop(f"read set {read_set_id} to become ACTIVE"):
                meta = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set_id)
                if meta["status"] == "ACTIVE":
                    break

            def part(name: str, number: int) -> bytes:
                source: Any = name  # "SOURCE1" or "SOURCE2"
                reply = client.get_read_set(sequenceStoreId=STORE_ID, id=read_set_id, file=source, partNumber=number)
                with reply["payload"] as body:
                    data: bytes = body.read()
                    return data

            def whole(name: str) -> bytes:
                chunks, number = [], 1
                while True:  # the store's download parts are its own: read until it has no more
                    try:
                        chunks.append(part(name, number))
                    except client.exceptions.RangeNotSatisfiableException:
                        return b"".join(chunks)
                    number += 1

            with ThreadPoolExecutor(2) as pool:
                return dict(zip(self.contents, pool.map(whole, self.contents), strict=True))
        finally:
            client.close()

    def check_success(self, code: int, out: str, err: str, *, creates: int = 1) -> str:
        """Exit 0, the read set id last on stdout, the bytes back, ``creates`` Creates in the log; the id."""
        assert self.store is not None
        assert code == 0, f"the rerun failed with exit code {code}:\n{out}\n{err}"
        lines = out.strip().splitlines()
        assert lines, f"the rerun printed nothing on stdout; stderr:\n{err}"
        read_set_id = lines[-1].strip()
        assert read_set_id.isdigit() and 10 <= len(read_set_id) <= 36, (
            f"last stdout line {read_set_id!r} is no read set id"
        )
        got = self.read_back(read_set_id)
        for name in SIZES:
            # The sources are plain FASTQ: the read set holds them gzip-compressed on the fly.
            assert got[name].startswith(b"\x1f\x8b"), f"{name} of read set {read_set_id} is not gzip"
            plain = gzip.decompress(got[name])
            assert plain == self.contents[name], f"{name} of read set {read_set_id} differs from the file"
        # Verified end to end: each whole source hashed (the parts sent before the interruption too), and equal to
        # the ETag the store computed from what it holds.
        assert "async-uploader: verified: the store's FASTQ_MD5up of SOURCE1, SOURCE2 equals" in err, err
        created = self.store.log.ops(CREATE_OP, status=None)
        assert len(created) == creates, f"expected {creates} CreateMultipartReadSetUpload, the log has {created}"
        return read_set_id


@pytest.fixture
def harness(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[Harness]:
    env = dict(cli_env)
    harness = Harness(tmp_path, env)
    try:
        yield harness
    finally:
        if harness.relay is not None:
            harness.relay.close()
        for process in reversed(harness.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGCONT)  # in case a failed test left it frozen
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()


# -- kill -9 ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """Where to kill the first run: the relay holds the upload there (``holds``), ``trigger`` sees it has got there."""

    name: str
    store_options: tuple[str, ...]
    holds: dict[str, Any]
    trigger: Callable[[Harness], bool]
    stop_first: bool = False  # SIGSTOP, let the store finish the Complete it was sent, then SIGKILL


def _acked(at_least: int) -> Callable[[Harness], bool]:
    def ready(h: Harness) -> bool:
        assert h.store is not None
        return h.store.log.acked_parts() >= at_least

    return ready


def _complete_sent(h: Harness) -> bool:
    assert h.relay is not None
    return h.relay.complete_sent.is_set()


# Every request waits this long in the store before it is handled: a Complete sent on after the kill is held there
# while its client is gone.
HOLD_MS = 150
HOLD = ("--latency-ms", str(HOLD_MS))
KILL_POINTS = [
    KillPoint("early", SLOW, {"parts": 2}, _acked(2)),
    KillPoint("middle", SLOW, {"parts": TOTAL_PARTS // 2}, _acked(TOTAL_PARTS // 2)),
    KillPoint("before-complete", SLOW, {"complete": "request"}, _complete_sent),
    # Killed with the Complete sent, the relay handing it to the store only then (the store then usually drops it:
    # its client is gone).
    KillPoint("during-complete", HOLD, {"complete": "request", "forward_held": True}, _complete_sent),
    # Frozen with the Complete sent, killed once the store has done it, its answer kept from the uploader: the read
    # set exists but the uploader never heard so. The rerun finds the upload gone and adopts the read set.
    KillPoint("complete-reply-lost", HOLD, {"complete": "reply"}, _complete_sent, stop_first=True),
]


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
def test_kill_9_then_rerun_finishes_the_same_upload(harness: Harness, point: KillPoint) -> None:
    store = harness.start_store(*point.store_options)
    harness.start_relay(**point.holds)
    first = harness.start_upload()
    harness.wait_until(first, point.trigger, f"the {point.name} kill point")
    acked_at_kill = store.log.acked_parts()
    if point.stop_first:
        first.send_signal(signal.SIGSTOP)
        for _ in deadline_loop("the store to finish the Complete the frozen uploader sent"):
            if store.log.ops(COMPLETE_OP, status=None):
                break
    killed_at = time.time()
    completes_before_kill = store.log.ops(COMPLETE_OP, status=None)
    first.kill()
    assert harness.wait_exit(first) == -signal.SIGKILL
    if point.name in ("early", "middle"):
        assert acked_at_kill == point.holds["parts"], "the relay let more parts through than it was told"
    else:
        assert acked_at_kill == TOTAL_PARTS, "Complete was sent before every part was acknowledged"
    if point.stop_first:
        assert [r["status"] for r in completes_before_kill] == [200], completes_before_kill
        assert harness.checkpoint is not None
        recorded = [r for r in checkpoint_records(harness.checkpoint) if r.get("t") == "complete"]
        assert not recorded, f"the uploader recorded a Complete it never saw: {recorded}"
    else:
        assert not completes_before_kill, f"the relay let a Complete through: {completes_before_kill}"
    if point.name == "during-complete":
        for _ in deadline_loop("the store to log the Complete sent on after the kill"):
            if store.log.ops(COMPLETE_OP, status=None):
                break
        held = store.log.ops(COMPLETE_OP, status=None)
        # Usually the store drops it (status 0: the client is gone before the request is handled); should the store
        # have done it anyway, the rerun must adopt the read set, which the checks below allow for.
        assert held[0]["time"] > killed_at, held

    code, out, err = harness.run_upload()
    harness.check_success(code, out, err)

    resent = store.log.resent_parts()
    assert len(resent) <= CONCURRENCY, f"{len(resent)} parts sent twice (at most {CONCURRENCY} were in flight)"
    assert all(n == 2 for n in resent.values()), f"a part was acknowledged more than twice: {resent}"
    # The first run never lists parts (it made the upload): the rerun starts at the first listing.
    records = store.log.refresh()
    resumed_at = next(i for i, r in enumerate(records) if r["operation"] == "ListReadSetUploadParts")
    first_run = [r for r in records[:resumed_at] if r["operation"] == COMPLETE_OP]
    rerun = [r for r in records[resumed_at:] if r["operation"] == COMPLETE_OP]
    done_before = [r for r in first_run if r["status"] == 200]
    if done_before:  # the store made the read set: the rerun must adopt it, not Complete again
        assert not rerun, f"the rerun completed again: {rerun}"
        assert store.log.ops("ListReadSets"), "the rerun did not look for the read set the lost Complete made"
    else:
        assert [r["status"] for r in rerun] == [200], f"expected one Complete from the rerun: {rerun}"
    if point.name in ("early", "middle", "before-complete"):
        assert not first_run, f"the store saw a Complete from the first run: {first_run}"
    elif point.name == "during-complete":
        assert first_run, "the Complete sent on after the kill never reached the store"
    elif point.stop_first:
        assert done_before, first_run
    if point.name in ("during-complete", "complete-reply-lost"):
        assert not resent, f"every part was recorded before Complete, yet some were sent again: {resent}"


# -- SIGINT ----------------------------------------------------------------------------------------------------


def test_sigint_exits_75_prints_the_resume_command_and_it_resumes(harness: Harness) -> None:
    store = harness.start_store(*SLOW)
    relay = harness.start_relay(parts=TOTAL_PARTS // 2)
    first = harness.start_upload()
    harness.wait_until(first, _acked(TOTAL_PARTS // 2), "half the parts to be acknowledged")
    first.send_signal(signal.SIGINT)
    harness.wait_until(first, lambda h: "SIGINT: stopping" in h.outputs()[1], "the uploader to say it is stopping")
    relay.release()  # the parts in flight (held) reach the store during the grace
    code = harness.wait_exit(first)
    out, err = harness.outputs()
    assert code == 75, f"SIGINT: expected exit code 75, got {code}:\n{out}\n{err}"
    assert not store.log.ops(COMPLETE_OP, status=None), "the interrupted upload completed anyway"
    expected = shlex.join(harness.command())
    printed = [line.strip() for line in err.splitlines() if "async_uploader upload" in line]
    assert printed == [expected], f"stderr does not print the resume command {expected!r}:\n{err}"

    code, out, err2 = harness.run_upload(command=shlex.split(printed[0]))
    harness.check_success(code, out, err2)
    # A graceful stop lets the parts in flight finish and records them: nothing is sent twice.
    assert store.log.resent_parts() == {}


# -- sources edited after the checkpoint -----------------------------------------------------------------------


def _single_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    return lines[0]


def _kill_a_third_of_the_way(harness: Harness) -> Store:
    store = harness.start_store(*SLOW)
    harness.start_relay(parts=TOTAL_PARTS // 3)
    first = harness.start_upload()
    harness.wait_until(first, _acked(TOTAL_PARTS // 3), "a third of the parts to be acknowledged")
    first.kill()
    harness.wait_exit(first)
    return store


_COMPLEMENT = bytes.maketrans(b"ACGT", b"TGCA")


def _edit_in_place(harness: Harness, name: str, offset: int) -> int:
    """Change the bases of the first sequence line at or after ``offset`` in place (up to 16 of them) and set the
    modification time back: the file stays FASTQ of the same size, and only its ctime tells. Returns where."""
    path = harness.sources[name]
    before = path.stat()
    content = harness.contents[name]
    offset = content.index(b"\n+\n", offset)
    offset = content.rindex(b"\n", 0, offset) + 1  # the start of that record's sequence line
    length = min(16, content.index(b"\n", offset) - offset)
    new = content[offset : offset + length].translate(_COMPLEMENT)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    edited = bytearray(content)
    edited[offset : offset + length] = new
    harness.contents[name] = bytes(edited)
    return offset


SAMPLED = 64 * 1024  # the fingerprint samples the first, middle and last 64 KiB of a source


@pytest.mark.parametrize("where", ["sent part, off the samples", "sent part, in a sample", "unsent part"])
def test_an_in_place_edit_with_the_mtime_restored_is_uploaded_as_the_file_is_now(harness: Harness, where: str) -> None:
    store = _kill_a_third_of_the_way(harness)
    sent = recorded_numbers(harness.checkpoint, "SOURCE1")
    size = SIZES["SOURCE1"]
    middle = (size - SAMPLED) // 2
    if where == "unsent part":
        number = max(n for n in range(1, size // PART_SIZE) if n not in sent)
    else:
        number = min(sent) if where == "sent part, in a sample" else sorted(sent)[len(sent) // 2]
    offset = _edit_in_place(harness, "SOURCE1", (number - 1) * PART_SIZE + 1000)
    assert (offset - 1) // PART_SIZE + 1 == number  # still inside the part chosen
    in_sample = offset < SAMPLED or middle <= offset < middle + SAMPLED or offset >= size - SAMPLED
    assert in_sample == (where == "sent part, in a sample"), (number, offset)

    code, out, err = harness.run_upload()
    # The read set holds the file as it is now, byte for byte (check_success reads it back): the edited part,
    # recorded as sent, was read again, found changed and sent again; the others were kept.
    harness.check_success(code, out, err)
    times = Counter(r["part_number"] for r in store.log.ops(PART_OP) if r["source"] == "SOURCE1")
    assert times[number] == (2 if number in sent else 1), (number, times)


def test_a_source_of_another_size_needs_restart(harness: Harness) -> None:
    store = _kill_a_third_of_the_way(harness)
    path = harness.sources["SOURCE1"]
    harness.contents["SOURCE1"] += b"@more\nACGT\n+\nIIII\n"  # one more read: still FASTQ
    path.write_bytes(harness.contents["SOURCE1"])
    code, out, err = harness.run_upload()
    assert code == 2, f"expected exit 2 for a resized source, got {code}:\n{out}\n{err}"
    line = _single_error_line(err)
    assert "--restart" in line and "size" in line, line
    assert len(store.log.ops(CREATE_OP, status=None)) == 1, "a refused run must not create an upload"

    # --restart: a new upload of the new bytes; the old one is aborted.
    code, out, err = harness.run_upload("--restart")
    harness.check_success(code, out, err, creates=2)
    created = [r["upload_id"] for r in store.log.ops(CREATE_OP)]
    assert len(set(created)) == 2, f"--restart did not make a new upload: {created}"
    aborted = [r["upload_id"] for r in store.log.ops("AbortMultipartReadSetUpload")]
    assert aborted == [created[0]], f"the old upload should be aborted once, got {aborted}"


@pytest.mark.parametrize("checkpoint", ["named", "default"])
def test_the_same_files_through_symlinks_elsewhere_resume_without_a_new_create(
    harness: Harness, checkpoint: str
) -> None:
    """A workflow's retry stages its inputs as symlinks in a fresh work folder: the same upload resumes."""
    if checkpoint == "default":
        harness.checkpoint = None
    store = _kill_a_third_of_the_way(harness)
    work = harness.tmp / "work2" / "a1b2c3"
    work.mkdir(parents=True)
    for name, path in list(harness.sources.items()):
        link = work / path.name
        link.symlink_to(path)
        harness.sources[name] = link
    code, out, err = harness.run_upload()
    harness.check_success(code, out, err, creates=1)
    assert "parts kept from before" in err
    assert store.log.resent_parts() == {} or len(store.log.resent_parts()) <= CONCURRENCY
