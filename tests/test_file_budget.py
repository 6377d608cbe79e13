"""The request budget shared by the processes of one machine through a locked file (``FileBudgetLimiter``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from async_uploader import cli
from async_uploader.core.config import RateLimits
from async_uploader.core.errors import ConfigError
from async_uploader.core.ratelimit import Limiter, RequestKind
from async_uploader.fleet.filebudget import FileBudgetLimiter, FileBudgetState, KindRecord
from tests.helpers import fastq_gz

CONTROL = RequestKind.CONTROL
PART = RequestKind.PART
CONTROL_OPERATIONS = {
    "CreateMultipartReadSetUpload",
    "CompleteMultipartReadSetUpload",
    "AbortMultipartReadSetUpload",
}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(path: Path, clock: FakeClock, **kwargs: Any) -> FileBudgetLimiter:
    kwargs.setdefault("margin", 1.0)
    return FileBudgetLimiter(path, kwargs.pop("rates", RateLimits()), clock=clock, **kwargs)


# -- pure, with a fake clock ----------------------------------------------------------------------------------


def test_reservations_are_spaced_by_the_rate_of_their_kind(tmp_path: Path) -> None:
    clock = FakeClock()
    budget = limiter(tmp_path / "budget", clock)
    assert isinstance(budget, Limiter)
    assert [budget.reserve(CONTROL) for _ in range(3)] == pytest.approx([0.0, 1.0, 2.0])
    assert [budget.reserve(PART) for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    clock.now += 10.0
    assert budget.reserve(CONTROL) == 0.0  # idle time does not pile up into a burst
    assert budget.reserve(CONTROL) == pytest.approx(1.0)
    assert budget.current_rate(CONTROL) == 1.0 and budget.current_rate(RequestKind.UNLIMITED) is None


def test_the_margin_keeps_the_budget_under_the_quota(tmp_path: Path) -> None:
    budget = FileBudgetLimiter(tmp_path / "budget", RateLimits(), clock=FakeClock())
    assert budget.current_rate(CONTROL) == pytest.approx(0.9)
    assert [budget.reserve(CONTROL) for _ in range(2)] == pytest.approx([0.0, 1 / 0.9])


def test_two_limiters_on_one_file_draw_from_one_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = limiter(tmp_path / "budget", clock), limiter(tmp_path / "budget", clock)
    assert first.reserve(CONTROL) == 0.0
    assert second.reserve(CONTROL) == pytest.approx(1.0)
    assert first.reserve(CONTROL) == pytest.approx(2.0)
    clock.now += 0.5
    assert second.reserve(CONTROL) == pytest.approx(2.5)
    assert first.state().kinds["control"].reserved == 4
    assert limiter(tmp_path / "other", clock).reserve(CONTROL) == 0.0  # another file, another budget


def test_a_throttle_lowers_the_shared_rate_once_per_window(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = limiter(tmp_path / "budget", clock), limiter(tmp_path / "budget", clock)
    first.on_throttle(PART)
    second.on_throttle(PART)  # the same burst of 429s, seen by another process
    first.reserve(PART)
    second.reserve(PART)
    record = first.state().kinds["parts"]
    assert record.decreases == 1 and record.throttles == 2
    assert first.current_rate(PART) == pytest.approx(7.0)
    assert second.current_rate(PART) == pytest.approx(7.0)  # the other process spaces its parts slower too
    clock.now += 2.0
    second.on_throttle(PART)
    assert second.reserve(PART) == 0.0
    assert second.current_rate(PART) == pytest.approx(4.9)
    assert first.state().kinds["parts"].decreases == 2


def test_successes_recover_the_rate_along_the_curve(tmp_path: Path) -> None:
    clock = FakeClock()
    budget = limiter(tmp_path / "budget", clock, recover_seconds=10.0)
    budget.on_throttle(CONTROL)
    budget.reserve(CONTROL)
    assert budget.current_rate(CONTROL) == pytest.approx(0.7)
    clock.now += 5.0
    budget.reserve(CONTROL)  # no success reported: the rate stays where the cut left it
    assert budget.current_rate(CONTROL) == pytest.approx(0.7)
    budget.on_success(CONTROL)
    budget.reserve(CONTROL)
    middle = budget.current_rate(CONTROL)
    assert middle is not None and 0.7 < middle < 1.0
    clock.now += 5.0
    budget.on_success(CONTROL)
    budget.reserve(CONTROL)
    assert budget.current_rate(CONTROL) == pytest.approx(1.0)
    clock.now += 20.0
    budget.on_success(CONTROL)
    budget.reserve(CONTROL)
    assert budget.current_rate(CONTROL) == pytest.approx(1.0)  # never above the top


def test_without_adaptation_throttles_are_counted_but_change_nothing(tmp_path: Path) -> None:
    budget = limiter(tmp_path / "budget", FakeClock(), adaptive=False)
    budget.on_throttle(CONTROL)
    budget.reserve(CONTROL)
    assert budget.current_rate(CONTROL) == 1.0
    assert budget.state().kinds["control"].throttles == 1


@pytest.mark.parametrize("content", [b"", b'{"kinds": {"control": {"next_fr'])
def test_an_empty_or_torn_budget_is_a_fresh_budget(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "budget"
    path.write_bytes(content)
    budget = limiter(path, FakeClock())
    assert budget.reserve(CONTROL) == 0.0
    assert budget.reserve(CONTROL) == pytest.approx(1.0)
    assert json.loads(path.read_bytes())["kinds"]["control"]["reserved"] == 2


@pytest.mark.parametrize(
    "content", [b'{"version": 1, "kinds": {}}', b"[1, 2]", b"\x00\xff", b'{"version": 7}', b"NaN", b"my notes\n"]
)
def test_a_file_that_is_not_a_budget_is_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "budget"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not a request budget of async-uploader; it is left as it is"):
        limiter(path, FakeClock())
    assert path.read_bytes() == content
    with pytest.raises(ConfigError, match="is a folder"):
        limiter(tmp_path, FakeClock())


def test_non_finite_times_are_a_fresh_budget() -> None:
    raw = b'{"version": 1, "kinds": {"control": {"next_free": Infinity}}}'
    assert FileBudgetState.decode(raw).kinds == {}


def test_state_round_trips() -> None:
    state = FileBudgetState({"control": KindRecord(next_free=5.0, rate=0.7, cut_at=3.0, before_cut=1.0)})
    again = FileBudgetState.decode(state.encode())
    assert again.kinds == state.kinds
    assert again.reserve("control", 4.0, 1.0) == pytest.approx((1.0, 0.7))


def test_the_file_is_private_and_created_with_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "budget.json"
    budget = limiter(path, FakeClock())
    budget.reserve(RequestKind.UNLIMITED)
    assert not path.exists()  # unlimited kinds never touch the file
    budget.reserve(CONTROL)
    assert path.stat().st_mode & 0o777 == 0o600


def test_unlimited_kinds_never_wait(tmp_path: Path) -> None:
    budget = limiter(tmp_path / "budget", FakeClock(), rates=RateLimits(control=None))
    assert [budget.reserve(CONTROL) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.current_rate(CONTROL) is None
    assert not (tmp_path / "budget").exists()


async def test_acquire_reserves_off_the_event_loop(tmp_path: Path) -> None:
    rates = RateLimits(parts=1000.0, control=1000.0, listings=None)
    budget = FileBudgetLimiter(tmp_path / "budget", rates)
    await asyncio.gather(*(budget.acquire(PART) for _ in range(5)))
    await budget.acquire(RequestKind.LISTING)
    assert budget.reservations == 5
    assert budget.state().kinds["parts"].reserved == 5


def test_the_module_imports_without_dask() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('dask', 'distributed'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import async_uploader.fleet.filebudget, async_uploader.cli\n"
        "assert not any(m.startswith(('dask', 'distributed')) for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the command line -------------------------------------------------------------------------------------------

BASE = ["upload", "r1.fq.gz", "--store-id", "1234567890", "--file-type", "fastq", "--subject-id", "s"]
BASE += ["--sample-id", "x", "--name", "n", "--endpoint-url", "http://127.0.0.1:9"]


def test_a_shared_budget_keeps_the_service_quotas_against_a_local_store(tmp_path: Path) -> None:
    parser = cli.build_parser()
    plain = parser.parse_args(BASE)
    assert cli.rate_limits(plain) == RateLimits.unlimited()
    assert cli.limiter_for(plain, cli.upload_config(plain)) is None
    shared = parser.parse_args([*BASE, "--shared-budget", str(tmp_path / "b")])
    assert cli.rate_limits(shared) == RateLimits()
    budget = cli.limiter_for(shared, cli.upload_config(shared))
    assert isinstance(budget, FileBudgetLimiter) and budget.path == tmp_path / "b"
    capped = parser.parse_args([*BASE, "--shared-budget", str(tmp_path / "b"), "--max-rate", "4"])
    assert cli.rate_limits(capped) == RateLimits(parts=4.0)


# -- real processes -----------------------------------------------------------------------------------------------


def starts(log: Path, operations: set[str]) -> list[float]:
    """Server-side start times (finish time minus duration) of the logged requests of ``operations``."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sorted(r["time"] - r["duration_ms"] / 1000.0 for r in records if r["operation"] in operations)


def most_in_window(times: list[float], window: float) -> int:
    """The most starts within any ``window`` seconds."""
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_three_processes_share_one_budget(tmp_path: Path, cli_env: dict[str, str]) -> None:
    log = tmp_path / "store.jsonl"
    store = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "async_uploader.emulator",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "store"),
        "--log",
        str(log),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        env=cli_env,
    )
    try:
        assert store.stdout is not None
        url = (await asyncio.wait_for(store.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        budget = tmp_path / "shared" / "budget.json"
        uploads = []
        for i in range(3):
            mates = []
            for mate in (1, 2):
                path = tmp_path / f"s{i}_{mate}.fq.gz"
                path.write_bytes(fastq_gz(5 * 1024 + 100 * i + mate, seed=10 * i + mate))
                mates.append(str(path))
            argv = [*mates, "--store-id", "1234567890", "--file-type", "FASTQ", "--subject-id", f"subject-{i}"]
            argv += ["--sample-id", f"sample-{i}", "--name", f"shared-{i}", "--part-size", "2048", "--json"]
            argv += ["--no-progress", "--endpoint-url", url, "--region", "us-east-1", "--shared-budget", str(budget)]
            uploads.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "async_uploader",
                    "upload",
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=cli_env,
                )
            )
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in uploads)), 75)
        for process, (out, err) in zip(uploads, outputs, strict=True):
            assert process.returncode == 0, err.decode()
            assert json.loads(out)["readSetId"]
    finally:
        store.send_signal(signal.SIGTERM)
        await asyncio.wait_for(store.wait(), 30)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert sum(r["operation"] == "CompleteMultipartReadSetUpload" and r["status"] == 200 for r in records) == 3
    control = starts(log, CONTROL_OPERATIONS)
    assert len(control) == 6
    # Spaced 1/0.9 s apart by the shared budget; 0.95 s leaves room for the jitter between client and store.
    assert most_in_window(control, 0.95) == 1, [round(b - a, 3) for a, b in itertools.pairwise(control)]
    parts = starts(log, {"UploadReadSetPart"})
    assert len(parts) == 18
    assert most_in_window(parts, 0.95) <= 10
    assert oct(budget.stat().st_mode & 0o777) == oct(0o600)
