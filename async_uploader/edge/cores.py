"""How busy the cores this process may run on are: the share of their time in use between two samples.

The self-tuning (``core.concurrency``) asks it once per window: where the cores are already busy, requests added
bring no bytes, only work. Linux says it in ``/proc/stat`` (each CPU's time in jiffies, spent and idle); the CPUs
counted are those of the process's affinity (``taskset``, a container's cpuset). A cgroup v2 CPU quota
(``cpu.max``, what a container's CPU limit sets) caps the process below its CPUs; the cgroup's own usage against
that quota is then the busier of the two readings. Elsewhere, or when a file cannot be read or parsed, a sample
is None and the tuning goes by throughput alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = ["CoreLoad"]

_STAT = Path("/proc/stat")
_CGROUP = Path("/sys/fs/cgroup")
_IDLE_FIELDS = (3, 4)
"""idle and iowait among user, nice, system, idle, iowait, irq, softirq, steal (steal: time the host took)."""
_COUNTED_FIELDS = 8
"""guest and guest_nice are already counted in user and nice."""


def _affinity() -> frozenset[int] | None:
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter is not None else None


class CoreLoad:
    """``sample()``: the share (0 to 1) of the cores' time in use since the previous sample; None the first time
    and wherever it cannot be known. ``stat`` and ``cgroup`` are the files' locations (tests point them
    elsewhere); ``cpus``, the CPUs counted (default: the process's affinity)."""

    def __init__(
        self,
        stat: Path = _STAT,
        cgroup: Path = _CGROUP,
        cpus: Collection[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stat = stat
        self._cgroup = cgroup
        self._cpus = frozenset(cpus) if cpus is not None else _affinity()
        self._clock = clock
        self._last: tuple[int, int] | None = None
        self._last_cgroup: tuple[float, float] | None = None
        self._quota = self._read_quota()
        self._broken = False  # set once a read fails (no such file, or nothing usable in it)

    def sample(self) -> float | None:
        if self._broken:
            return None
        try:
            spent, total = self._read_stat()
            used = self._read_cgroup_usage() if self._quota is not None else None
        except (OSError, ValueError, IndexError):
            self._broken = True  # the platform does not say: stop asking
            return None
        now = self._clock()
        busy = None
        if self._last is not None and total > self._last[1]:
            busy = (spent - self._last[0]) / (total - self._last[1])
        self._last = (spent, total)
        if used is not None and self._quota is not None:
            last, self._last_cgroup = self._last_cgroup, (now, used)
            if last is not None and now > last[0] and busy is not None:
                busy = max(busy, (used - last[1]) / ((now - last[0]) * self._quota))
        return None if busy is None else min(1.0, max(0.0, busy))

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

    def _read_quota(self) -> float | None:
        """CPUs' worth of time the cgroup may use (cpu.max), when that is fewer than the counted CPUs; else None."""
        try:
            quota, period = (self._cgroup / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
            cpus = int(quota) / int(period)
        except (OSError, ValueError):
            return None
        counted = len(self._cpus) if self._cpus is not None else os.cpu_count() or 1
        return cpus if 0 < cpus < counted else None

    def _read_cgroup_usage(self) -> float:
        """CPU seconds the cgroup has used (cpu.stat, usage_usec)."""
        for line in (self._cgroup / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
        raise ValueError("cpu.stat has no usage_usec")
