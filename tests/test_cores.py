"""edge.cores: how busy the process's cores are, from /proc/stat (and a cgroup's CPU quota), for the self-tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from async_uploader.edge.cores import CoreLoad, Load, find_quota

TICK = os.sysconf("SC_CLK_TCK")
HEADER = "cpu  {0} 0 {1} {2} {3} 0 0 0 0 0\n"
LINE = "cpu{n} {0} 0 {1} {2} {3} 0 0 0 0 0\n"


def write_stat(path: Path, cpus: list[tuple[int, int, int, int]]) -> None:
    """/proc/stat with (user, system, idle, iowait) jiffies per CPU, the sum first, then the lines that follow."""
    total = [sum(values[field] for values in cpus) for field in range(4)]
    text = HEADER.format(*total) + "".join(LINE.format(*values, n=n) for n, values in enumerate(cpus))
    path.write_text(text + "intr 12345 0 0\nctxt 999\n")


def busy(load: Load | None) -> float | None:
    return None if load is None else load.busy


def test_the_share_of_time_the_cores_were_busy_between_two_samples(tmp_path: Path) -> None:
    stat, own = tmp_path / "stat", [5.0]
    write_stat(stat, [(100, 50, 800, 50), (100, 50, 800, 50)])
    load = CoreLoad(stat=stat, proc=tmp_path / "no-proc", cpus={0, 1}, own_cpu=lambda: own[0])
    assert load.sample() is None  # nothing to compare with yet
    # 100 jiffies each: CPU 0 busy 90 (user 60, system 30), CPU 1 busy 50; iowait counts as idle
    write_stat(stat, [(160, 80, 805, 55), (140, 60, 840, 60)])
    own[0] += 60 / TICK  # this process: 60 of the 140 busy jiffies
    assert load.sample() == pytest.approx(Load(140 / 200, 60 / 200))


def test_only_the_cpus_the_process_may_run_on_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, [(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)])
    load = CoreLoad(stat=stat, proc=tmp_path / "no-proc", cpus={1})
    load.sample()
    write_stat(stat, [(100, 0, 0, 0), (25, 0, 75, 0), (0, 0, 100, 0)])  # taskset -c 1: CPU 0's work is not ours
    assert busy(load.sample()) == pytest.approx(0.25)
    monkeypatch.delattr("os.sched_getaffinity")  # a platform that does not say: the sum line
    everything = CoreLoad(stat=stat, proc=tmp_path / "no-proc")
    everything.sample()
    write_stat(stat, [(200, 0, 0, 0), (50, 0, 150, 0), (0, 0, 200, 0)])
    assert busy(everything.sample()) == pytest.approx((100 + 25) / 300)


def fake_proc(tmp_path: Path, groups: str, mounts: list[tuple[str, Path, str, str]]) -> Path:
    """A /proc/self with ``cgroup`` (the process's groups) and ``mountinfo`` (root, mount point, type, options)."""
    proc = tmp_path / "proc-self"
    proc.mkdir()
    (proc / "cgroup").write_text(groups)
    lines = [
        f"{30 + n} 23 0:{40 + n} {root} {str(point).replace(' ', chr(92) + '040')} rw,relatime shared:{n} - {kind}"
        f" {kind} {options}\n"
        for n, (root, point, kind, options) in enumerate(mounts)
    ]
    (proc / "mountinfo").write_text("22 1 8:1 / / rw,relatime - ext4 /dev/root rw\n" + "".join(lines))
    return proc


def test_a_cgroup_quota_below_the_cpus_makes_its_own_usage_the_reading(tmp_path: Path) -> None:
    """A container (its own cgroup v2 namespace) limited to half a CPU on a machine of two idle cores: 0.4 CPU s
    used in 1 s is 80% busy."""
    stat, now, group = tmp_path / "stat", [0.0], tmp_path / "cgroup"
    group.mkdir()
    proc = fake_proc(tmp_path, "0::/\n", [("/", group, "cgroup2", "rw,nsdelegate")])
    (group / "cpu.max").write_text("50000 100000\n")
    (group / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 900000\n")
    write_stat(stat, [(0, 0, 0, 0), (0, 0, 0, 0)])
    own = [0.0]
    load = CoreLoad(stat=stat, proc=proc, cpus={0, 1}, clock=lambda: now[0], own_cpu=lambda: own[0])
    assert load.quota == 0.5
    load.sample()
    now[0], own[0] = 1.0, 0.35  # this process: 0.35 of the group's 0.4 CPU s
    (group / "cpu.stat").write_text("usage_usec 1400000\nuser_usec 1300000\n")
    write_stat(stat, [(20, 0, 80, 0), (20, 0, 80, 0)])
    assert load.sample() == pytest.approx(Load(0.8, 0.7))
    (group / "cpu.max").write_text("max 100000\n")  # no quota: the cores alone
    unlimited = CoreLoad(stat=stat, proc=proc, cpus={0, 1}, clock=lambda: now[0])
    assert unlimited.quota is None
    unlimited.sample()
    write_stat(stat, [(40, 0, 160, 0), (40, 0, 160, 0)])
    assert busy(unlimited.sample()) == pytest.approx(0.2)


def test_a_quota_on_a_group_above_the_process_binds_and_its_usage_is_read(tmp_path: Path) -> None:
    """cgroup v2 on a host: a systemd slice with CPUQuota=150% above the service the process runs in."""
    mount = tmp_path / "sys fs cgroup"  # a space in the mount point: mountinfo escapes it
    service = mount / "pipeline.slice" / "nextflow.service"
    service.mkdir(parents=True)
    (mount / "pipeline.slice" / "cpu.max").write_text("150000 100000\n")
    (mount / "pipeline.slice" / "cpu.stat").write_text("usage_usec 5000000\n")
    (service / "cpu.max").write_text("max 100000\n")
    (service / "cpu.stat").write_text("usage_usec 1000000\n")
    proc = fake_proc(tmp_path, "0::/pipeline.slice/nextflow.service\n", [("/", mount, "cgroup2", "rw")])
    quota = find_quota(proc)
    assert quota is not None and quota.cpus == 1.5 and quota.used() == 5.0
    (service / "cpu.max").write_text("100000 100000\n")  # tighter below: the service's own binds
    quota = find_quota(proc)
    assert quota is not None and quota.cpus == 1.0 and quota.used() == 1.0


def test_a_cgroup_v1_quota_with_cpuacct_mounted_apart(tmp_path: Path) -> None:
    """A container on a cgroup v1 host (each hierarchy mounted with the container's group at its top), cpu and
    cpuacct mounted apart as on this project's CI machine: half a CPU, usage in nanoseconds."""
    cpu, accounting, now = tmp_path / "cpu", tmp_path / "cpuacct", [0.0]
    cpu.mkdir()
    accounting.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("50000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (accounting / "cpuacct.usage").write_text("2000000000\n")
    groups = "5:memory:/docker/abc\n4:cpu:/docker/abc\n3:cpuacct:/docker/abc\n0::/\n"
    mounts = [("/docker/abc", cpu, "cgroup", "rw,cpu"), ("/docker/abc", accounting, "cgroup", "rw,cpuacct")]
    stat = tmp_path / "stat"
    write_stat(stat, [(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)])
    load = CoreLoad(stat=stat, proc=fake_proc(tmp_path, groups, mounts), cpus={0, 1, 2, 3}, clock=lambda: now[0])
    assert load.quota == 0.5
    load.sample()
    now[0] = 0.5
    (accounting / "cpuacct.usage").write_text("2225000000\n")  # 0.225 CPU s in 0.5 s of a half-CPU quota
    write_stat(stat, [(5, 0, 45, 0), (0, 0, 50, 0), (0, 0, 50, 0), (0, 0, 50, 0)])
    assert busy(load.sample()) == pytest.approx(0.9)


def test_cgroup_v1_co_mounted_on_a_host_the_tightest_level_binds(tmp_path: Path) -> None:
    mount = tmp_path / "cpu,cpuacct"
    job = mount / "slurm" / "job_42"
    job.mkdir(parents=True)
    for directory, microseconds in ((mount, "-1"), (mount / "slurm", "400000"), (job, "150000")):
        (directory / "cpu.cfs_quota_us").write_text(microseconds + "\n")
        (directory / "cpu.cfs_period_us").write_text("100000\n")
        (directory / "cpuacct.usage").write_text("7\n")
    proc = fake_proc(tmp_path, "3:cpu,cpuacct:/slurm/job_42\n", [("/", mount, "cgroup", "rw,cpu,cpuacct")])
    quota = find_quota(proc)
    assert quota is not None and quota.cpus == 1.5 and quota.usage == job / "cpuacct.usage"
    (job / "cpu.cfs_quota_us").write_text("-1\n")  # no quota of its own: the slurm group's binds
    quota = find_quota(proc)
    assert quota is not None and quota.cpus == 4.0
    assert CoreLoad(stat=tmp_path / "stat", proc=proc, cpus=range(4)).quota is None  # 4 CPUs' worth of 4: no cap
    assert CoreLoad(stat=tmp_path / "stat", proc=proc, cpus=range(8)).quota == 4.0


def test_no_quota_where_it_cannot_be_read(tmp_path: Path) -> None:
    group = tmp_path / "cgroup"
    group.mkdir()
    (group / "cpu.max").write_text("50000 100000\n")  # but no cpu.stat: its usage cannot be known
    proc = fake_proc(tmp_path, "0::/\n", [("/", group, "cgroup2", "rw")])
    assert find_quota(proc) is None
    (group / "cpu.stat").write_text("usage_usec 1\n")
    assert find_quota(proc) is not None
    (group / "cpu.max").write_text("half 100000\n")  # unparsable: no quota we could see
    assert find_quota(proc) is None
    (proc / "cgroup").write_text("0::/\n")
    (proc / "mountinfo").write_text("")  # no cgroup mounted
    assert find_quota(proc) is None
    assert find_quota(tmp_path / "no-proc") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/cgroup is Linux's")
def test_this_machine_s_quota_is_found_or_none_without_error() -> None:
    quota = find_quota()
    assert quota is None or (quota.cpus > 0 and quota.used() >= 0)


@pytest.mark.parametrize("text", ["", "cpu0 x y z\n", "intr 1 2 3\n"])
def test_a_file_that_says_nothing_usable_gives_no_reading_and_is_not_asked_again(tmp_path: Path, text: str) -> None:
    stat = tmp_path / "stat"
    stat.write_text(text)
    load = CoreLoad(stat=stat, proc=tmp_path / "no-proc", cpus={0})
    assert load.sample() is None
    write_stat(stat, [(1, 1, 1, 1)])
    assert load.sample() is None and load.sample() is None


def test_no_such_file_means_no_reading(tmp_path: Path) -> None:
    assert CoreLoad(stat=tmp_path / "missing", proc=tmp_path / "no-proc").sample() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_s_cores_are_read_between_zero_and_one() -> None:
    load = CoreLoad()
    assert load.sample() is None
    time.sleep(0.05)  # at least a few of the kernel's ticks: the counters move
    sample = load.sample()
    assert sample is not None and 0.0 <= sample.own <= sample.busy <= 1.0


QUOTA_CHILD = """
import json, os, sys, time
for procs in sys.argv[1:]:
    with open(procs, "w") as file:
        file.write(str(os.getpid()))
from async_uploader.edge.cores import CoreLoad
load = CoreLoad()
load.sample()
while time.thread_time() < 0.3:  # CPU time, however long the quota makes it take
    pass
print(json.dumps({"quota": load.quota, "load": load.sample()}))
"""


def _cgroup_mounts() -> list[tuple[str, Path, set[str]]]:
    """(type, mount point, options) of each cgroup hierarchy mounted here."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[dash + 1] in ("cgroup", "cgroup2"):
            found.append((fields[dash + 1], Path(fields[4]), set(fields[dash + 3].split(","))))
    return found


@pytest.fixture
def quota_group() -> Iterator[list[Path]]:
    """A new cgroup of half a CPU at the top of this machine's cpu hierarchy (v1, with its cpuacct one, or v2):
    the ``cgroup.procs`` files a process writes its pid to, to run in it. Skipped where none may be made."""
    name, made, procs = f"async-uploader-test-{os.getpid()}", [], []
    try:
        mounts = _cgroup_mounts()
        v1 = {option: point for kind, point, options in mounts if kind == "cgroup" for option in options}
        v2 = [point for kind, point, _ in mounts if kind == "cgroup2"]
        if "cpu" in v1 and "cpuacct" in v1:
            for point in dict.fromkeys((v1["cpu"], v1["cpuacct"])):
                (point / name).mkdir()
                made.append(point / name)
                procs.append(point / name / "cgroup.procs")
            (v1["cpu"] / name / "cpu.cfs_quota_us").write_text("50000")
        elif v2 and "cpu" in (v2[0] / "cgroup.subtree_control").read_text().split():
            (v2[0] / name).mkdir()
            made.append(v2[0] / name)
            procs.append(v2[0] / name / "cgroup.procs")
            (v2[0] / name / "cpu.max").write_text("50000 100000")
    except OSError:
        pass
    if not procs or len(made) != len(procs):
        for directory in made:
            directory.rmdir()
        pytest.skip("no cgroup with a cpu controller this test may make here (it needs root and cgroupfs)")
    yield procs
    for directory in made:
        for _ in range(50):  # the child has been waited for; the kernel lets the group go within moments
            try:
                directory.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_real_cgroup_quota_is_found_and_its_usage_read(quota_group: list[Path]) -> None:
    """A process the kernel holds to half a CPU finds that quota in its own cgroup and reads the group's usage."""
    root = Path(__file__).resolve().parent.parent
    child = subprocess.run(
        [sys.executable, "-c", QUOTA_CHILD, *map(str, quota_group)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(child.stdout)
    assert found["quota"] == 0.5
    busy, own = found["load"]  # the group's usage against its quota, or the machine's cores if they were busier
    assert 0.0 < own <= busy <= 1.0
