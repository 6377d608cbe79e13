"""The schedule bound: the least time any client could take against a store that rations part starts.

The distant store with the service's quotas admits UploadReadSetPart requests through a token bucket (``rate``
per second, holding ``burst`` tokens, full at the start), caps every connection at ``speed`` bytes per second and
delays every request by ``latency`` before it is admitted. Give a client unlimited connections, free CPU and no
network time besides that latency, and the best it can do is:

- Create: one latency (and one control token);
- the parts: the i-th part to be admitted (0-based) cannot pass before ``max(0, (i + 1 - burst) / rate)`` seconds
  after the first, and takes ``size / speed`` on its connection once admitted. Admitting the largest parts first
  makes the latest finish earliest, so the parts need ``latency + max_i(slot_i + size_i / speed)`` with sizes
  sorted largest first;
- Complete: one latency, and admitted no earlier than ``1 / control_rate`` after Create was (the control bucket
  holds one token, which Create took).

``bound = max(3 × latency + max_i(slot_i + size_i / speed), latency + 1 / control_rate)``.

A client's "× bound" is this bound over its measured seconds: 1.0 would be a perfect schedule.
"""

from __future__ import annotations

from collections.abc import Sequence


def part_sizes(source_sizes: Sequence[int], part_size: int) -> list[int]:
    """The length of every part of sources cut at ``part_size`` (the last part of each holds the remainder)."""
    sizes = []
    for size in source_sizes:
        full, rest = divmod(size, part_size)
        sizes += [part_size] * full + ([rest] if rest else [])
    return sizes


def schedule_bound(
    sizes: Sequence[int],
    *,
    rate: float,
    burst: float,
    speed: float,
    latency: float,
    control_rate: float,
) -> float:
    """Seconds the best possible schedule of parts of ``sizes`` takes (see the module docstring)."""
    if not sizes:
        return 0.0
    ordered = sorted(sizes, reverse=True)
    parts = max(max(0.0, (index + 1 - burst) / rate) + size / speed for index, size in enumerate(ordered))
    return max(3 * latency + parts, latency + 1 / control_rate)
