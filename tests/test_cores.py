"""edge.cores: how busy the process's cores are, from /proc/stat (and a cgroup's CPU quota), for the self-tuning."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from async_uploader.edge.cores import CoreLoad

HEADER = "cpu  {0} 0 {1} {2} {3} 0 0 0 0 0\n"
LINE = "cpu{n} {0} 0 {1} {2} {3} 0 0 0 0 0\n"


def write_stat(path: Path, cpus: list[tuple[int, int, int, int]]) -> None:
    """/proc/stat with (user, system, idle, iowait) jiffies per CPU, the sum first, then the lines that follow."""
    total = [sum(values[field] for values in cpus) for field in range(4)]
    text = HEADER.format(*total) + "".join(LINE.format(*values, n=n) for n, values in enumerate(cpus))
    path.write_text(text + "intr 12345 0 0\nctxt 999\n")


def test_the_share_of_time_the_cores_were_busy_between_two_samples(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, [(100, 50, 800, 50), (100, 50, 800, 50)])
    load = CoreLoad(stat=stat, cgroup=tmp_path, cpus={0, 1})
    assert load.sample() is None  # nothing to compare with yet
    # 100 jiffies each: CPU 0 busy 90 (user 60, system 30), CPU 1 busy 50; iowait counts as idle
    write_stat(stat, [(160, 80, 805, 55), (140, 60, 840, 60)])
    assert load.sample() == pytest.approx(140 / 200)


def test_only_the_cpus_the_process_may_run_on_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, [(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)])
    load = CoreLoad(stat=stat, cgroup=tmp_path, cpus={1})
    load.sample()
    write_stat(stat, [(100, 0, 0, 0), (25, 0, 75, 0), (0, 0, 100, 0)])  # taskset -c 1: CPU 0's work is not ours
    assert load.sample() == pytest.approx(0.25)
    monkeypatch.delattr("os.sched_getaffinity")  # a platform that does not say: the sum line
    everything = CoreLoad(stat=stat, cgroup=tmp_path)
    everything.sample()
    write_stat(stat, [(200, 0, 0, 0), (50, 0, 150, 0), (0, 0, 200, 0)])
    assert everything.sample() == pytest.approx((100 + 25) / 300)


def test_a_cgroup_quota_below_the_cpus_makes_its_own_usage_the_reading(tmp_path: Path) -> None:
    """A container limited to half a CPU on a machine of two idle cores: 0.4 CPU s used in 1 s is 80% busy."""
    stat, now = tmp_path / "stat", [0.0]
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 900000\n")
    write_stat(stat, [(0, 0, 0, 0), (0, 0, 0, 0)])
    load = CoreLoad(stat=stat, cgroup=tmp_path, cpus={0, 1}, clock=lambda: now[0])
    load.sample()
    now[0] = 1.0
    (tmp_path / "cpu.stat").write_text("usage_usec 1400000\nuser_usec 1300000\n")
    write_stat(stat, [(20, 0, 80, 0), (20, 0, 80, 0)])
    assert load.sample() == pytest.approx(0.8)
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no quota: the cores alone
    unlimited = CoreLoad(stat=stat, cgroup=tmp_path, cpus={0, 1}, clock=lambda: now[0])
    unlimited.sample()
    write_stat(stat, [(40, 0, 160, 0), (40, 0, 160, 0)])
    assert unlimited.sample() == pytest.approx(0.2)


@pytest.mark.parametrize("text", ["", "cpu0 x y z\n", "intr 1 2 3\n"])
def test_a_file_that_says_nothing_usable_gives_no_reading_and_is_not_asked_again(tmp_path: Path, text: str) -> None:
    stat = tmp_path / "stat"
    stat.write_text(text)
    load = CoreLoad(stat=stat, cgroup=tmp_path, cpus={0})
    assert load.sample() is None
    write_stat(stat, [(1, 1, 1, 1)])
    assert load.sample() is None and load.sample() is None


def test_no_such_file_means_no_reading(tmp_path: Path) -> None:
    assert CoreLoad(stat=tmp_path / "missing", cgroup=tmp_path).sample() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_s_cores_are_read_between_zero_and_one() -> None:
    load = CoreLoad()
    assert load.sample() is None
    time.sleep(0.05)  # at least a few of the kernel's ticks: the counters move
    busy = load.sample()
    assert busy is not None and 0.0 <= busy <= 1.0
