"""How busy the cores this process may run on are: the share of their time in use between two samples.

The self-tuning (``core.concurrency``) asks it once per window: where the cores are already busy, requests added
bring no bytes, only work. Linux says it in ``/proc/stat`` (each CPU's time in jiffies, spent and idle); the CPUs
counted are those of the process's affinity (``taskset``, a container's cpuset). A CPU quota (what a container's
CPU limit, or systemd's ``CPUQuota=``, sets) caps the process below its CPUs; the group's own usage against that
quota is then the busier of the two readings. The quota is found where the kernel says the process's group is
(``/proc/self/cgroup``, and where each hierarchy is mounted, ``/proc/self/mountinfo``), on that group and every
group above it up to the mount (the tightest binds): cgroup v2 (``cpu.max``, usage in ``cpu.stat``) or v1
(``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``, usage in the cpuacct hierarchy's ``cpuacct.usage``). Each
sample also says how much of that time was this process's (its CPU time over the same interval, against the same
capacity): cores busy with the uploader's own work are not cores other work needs. Elsewhere, or when a file
cannot be read or parsed, a sample is None and the tuning goes by throughput alone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

__all__ = ["CoreLoad", "Load", "Mount", "Quota", "cgroup_mounts", "find_quota"]

_STAT = Path("/proc/stat")
_PROC_SELF = Path("/proc/self")
_IDLE_FIELDS = (3, 4)
"""idle and iowait among user, nice, system, idle, iowait, irq, softirq, steal (steal: time the host took)."""
_COUNTED_FIELDS = 8
"""guest and guest_nice are already counted in user and nice."""


class Load(NamedTuple):
    """One sample: the share (0 to 1) of the cores' time in use, and the share this process used."""

    busy: float
    own: float


def _affinity() -> frozenset[int] | None:
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter is not None else None


class CoreLoad:
    """``sample()``: the share (0 to 1) of the cores' time in use since the previous sample, and how much of it
    this process used (``Load``); None the first time and wherever it cannot be known. ``stat`` and ``proc`` (the
    process's own ``/proc/self``) are where the kernel's files are read (tests point them elsewhere); ``cpus``, the
    CPUs counted (default: the process's affinity); ``own_cpu``, the CPU seconds this process has used."""

    def __init__(
        self,
        stat: Path = _STAT,
        proc: Path = _PROC_SELF,
        cpus: Collection[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._stat = stat
        self._own_cpu = own_cpu
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = frozenset(cpus) if cpus is not None else _affinity()
        self._clock = clock
        self._last: tuple[int, int, float] | None = None  # jiffies spent and in all, this process's CPU s
        self._last_cgroup: tuple[float, float, float] | None = None
        counted = len(self._cpus) if self._cpus is not None else os.cpu_count() or 1
        limit = find_quota(proc)
        self._limit = limit if limit is not None and limit.cpus < counted else None
        self._broken = False  # set once a read fails (no such file, or nothing usable in it)

    @property
    def quota(self) -> float | None:
        """CPUs' worth of time a quota lets the process's group use, where that is fewer than the CPUs counted."""
        return self._limit.cpus if self._limit is not None else None

    def sample(self) -> Load | None:
        if self._broken:
            return None
        try:
            spent, total = self._read_stat()
            used = self._limit.used() if self._limit is not None else None
        except (OSError, ValueError, IndexError):
            self._broken = True  # the platform does not say: stop asking
            return None
        now, own = self._clock(), self._own_cpu()
        load = None
        if self._last is not None and total > self._last[1]:
            # this process's CPU seconds against the counted CPUs' time over the same interval (ticks)
            capacity = (total - self._last[1]) / self._tick
            load = Load((spent - self._last[0]) / (total - self._last[1]), (own - self._last[2]) / capacity)
        self._last = (spent, total, own)
        if used is not None and self._limit is not None:
            last, self._last_cgroup = self._last_cgroup, (now, used, own)
            if last is not None and now > last[0] and load is not None:
                capacity = (now - last[0]) * self._limit.cpus
                quota = Load((used - last[1]) / capacity, (own - last[2]) / capacity)
                load = quota if quota.busy > load.busy else load  # the busier reading, with its own share
        if load is None:
            return None
        busy = min(1.0, max(0.0, load.busy))
        return Load(busy, min(busy, max(0.0, load.own)))

    def _read_stat(self) -> tuple[int, int]:
        """Jiffies spent and in all, over the counted CPUs (all of them when the affinity is unknown)."""
        spent = total = 0
        counted = 0
        with self._stat.open("rb") as file:
            for line in file:
                if not line.startswith(b"cpu"):
                    break  # the cpu lines come first
                name, *fields = line.split()
                if self._cpus is None:
                    if name != b"cpu":
                        continue
                elif name == b"cpu" or int(name[3:]) not in self._cpus:
                    continue
                values = [int(value) for value in fields[:_COUNTED_FIELDS]]
                idle = sum(values[index] for index in _IDLE_FIELDS if index < len(values))
                total += sum(values)
                spent += sum(values) - idle
                counted += 1
        if not counted:
            raise ValueError("no cpu line for the counted CPUs")
        return spent, total


@dataclass(frozen=True)
class Quota:
    """A CPU quota: ``cpus`` CPUs' worth of time for the group, which has used ``used()`` CPU seconds so far."""

    cpus: float
    usage: Path
    unit: float  # seconds per unit of the number in ``usage``
    key: str | None = None  # the line of ``usage`` that holds it (``usage_usec`` of cpu.stat); None: the whole file

    def used(self) -> float:
        text = self.usage.read_text()
        if self.key is None:
            return int(text) * self.unit
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == self.key:
                return int(value) * self.unit
        raise ValueError(f"{self.usage} has no {self.key}")


@dataclass(frozen=True)
class Mount:
    """Where a cgroup hierarchy is mounted, and which of its groups the mount shows at its top."""

    root: PurePosixPath  # the group of the hierarchy the mount shows at its top (a container's own, often)
    point: Path

    def directory(self, group: str) -> Path:
        """Where the files of ``group`` (a path in the hierarchy, as /proc/self/cgroup says it) are."""
        try:
            inside = PurePosixPath(group).relative_to(self.root)
        except ValueError:
            return self.point  # a group outside what the mount shows: the top of what it shows is the nearest
        if ".." in inside.parts:
            return self.point
        return self.point.joinpath(*inside.parts)


def find_quota(proc: Path = _PROC_SELF) -> Quota | None:
    """The tightest CPU quota on the process's group or any group above it, in the v2 hierarchy or v1's cpu one
    (a hybrid system has both); None where there is none, or it cannot be read."""
    try:
        groups = _groups((proc / "cgroup").read_text())
        mounts = cgroup_mounts((proc / "mountinfo").read_text())
    except (OSError, ValueError):
        return None
    found: list[Quota] = []
    if "" in groups and "" in mounts:
        found += _tightest(mounts[""], groups[""], _v2_quota)
    if "cpu" in groups and "cpu" in mounts and "cpuacct" in mounts:
        cpu, accounting = mounts["cpu"], mounts["cpuacct"]

        def v1_quota(directory: Path) -> Quota | None:
            # the usage of the same group in the cpuacct hierarchy (the cpu one itself where they are co-mounted)
            group = cpu.root.joinpath(*directory.relative_to(cpu.point).parts)
            return _v1_quota(directory, accounting.directory(str(group)))

        found += _tightest(cpu, groups["cpu"], v1_quota)
    return min(found, key=lambda quota: quota.cpus, default=None)


def _tightest(mount: Mount, group: str, quota_of: Callable[[Path], Quota | None]) -> list[Quota]:
    """The smallest quota on ``group`` and the groups above it, up to the top of ``mount`` (empty if none)."""
    leaf = mount.directory(group)
    found: list[Quota] = []
    for level in (leaf, *leaf.parents):
        if not level.is_relative_to(mount.point):
            break
        try:
            quota = quota_of(level)
            if quota is not None:
                quota.used()  # a quota whose usage cannot be read is no use
                found.append(quota)
        except (OSError, ValueError):
            pass  # a level that cannot be read sets no limit we could see
    return [min(found, key=lambda quota: quota.cpus)] if found else []


def _v2_quota(directory: Path) -> Quota | None:
    try:
        text = (directory / "cpu.max").read_text()
    except FileNotFoundError:
        return None  # the root group, or no cpu controller here
    quota, period = text.split()[:2]
    if quota == "max":
        return None
    cpus = int(quota) / int(period)
    return Quota(cpus, directory / "cpu.stat", 1e-6, "usage_usec") if cpus > 0 else None


def _v1_quota(directory: Path, accounting: Path) -> Quota | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except FileNotFoundError:
        return None
    if quota <= 0 or period <= 0:
        return None  # -1: no quota
    return Quota(quota / period, accounting / "cpuacct.usage", 1e-9)


def _groups(text: str) -> dict[str, str]:
    """/proc/self/cgroup: the process's group in each hierarchy; "" for v2's, else by each v1 controller's name."""
    groups: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, group = parts
        if hierarchy == "0" and not controllers:
            groups[""] = group
        for controller in filter(None, controllers.split(",")):
            groups[controller] = group
    return groups


_ESCAPED = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape (\\040)."""
    return _ESCAPED.sub(lambda match: chr(int(match.group(1), 8)), field)


def cgroup_mounts(text: str) -> dict[str, Mount]:
    """/proc/self/mountinfo: where cgroup v2 ("") and the v1 cpu and cpuacct controllers are mounted (the first)."""
    mounts: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 4:
            continue
        root, point = PurePosixPath(_unescape(fields[3])), Path(_unescape(fields[4]))
        kind, options = fields[dash + 1], fields[dash + 3].split(",")
        if kind == "cgroup2":
            mounts.setdefault("", Mount(root, point))
        elif kind == "cgroup":
            for controller in ("cpu", "cpuacct"):
                if controller in options:
                    mounts.setdefault(controller, Mount(root, point))
    return mounts
