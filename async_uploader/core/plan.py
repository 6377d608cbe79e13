"""Pure planning: source sizes and a part size → numbered parts (source, number, offset, length).

The service numbers parts 1..10,000 separately per source and takes at most 100 MiB per part, so one source
holds at most 10,000 × 100 MiB. Parts are produced lazily, interleaved across sources so both advance
together.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .config import DEFAULT_PART_SIZE, MAX_PART_SIZE, MAX_PARTS, MIB, Source
from .errors import PlanError, SourceError

__all__ = ["MAX_SOURCE_SIZE", "Part", "Plan", "make_plan", "minimum_part_size", "stream_part"]

MAX_SOURCE_SIZE = MAX_PARTS * MAX_PART_SIZE
"""The largest source the service can hold: 10,000 parts of 100 MiB (1,048,576,000,000 bytes)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One part to send: bytes ``offset .. offset + length`` of ``source``, sent as part ``number``."""

    source: Source
    number: int
    offset: int
    length: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def minimum_part_size(size: int) -> int:
    """The smallest part size in whole MiB that splits ``size`` bytes into at most 10,000 parts."""
    return max(1, _ceil_div(_ceil_div(size, MAX_PARTS), MIB)) * MIB


@dataclass(frozen=True)
class Plan:
    """The parts of every source for one part size. ``sizes`` holds each file source's length in bytes;
    ``streams`` names the sources whose length is known only at their end (read in order, ``stream_part``)."""

    part_size: int
    sizes: Mapping[Source, int] = field(default_factory=dict)
    streams: frozenset[Source] = frozenset()

    def __post_init__(self) -> None:
        ordered = {source: self.sizes[source] for source in Source if source in self.sizes}
        object.__setattr__(self, "sizes", ordered)

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every source, files and streams, in order."""
        return tuple(s for s in Source if s in self.sizes or s in self.streams)

    def stream_part(self, source: Source, number: int, length: int) -> Part:
        """Part ``number`` of a stream, ``length`` bytes read; PlanError past the service's 10,000 parts."""
        if not 1 <= number <= MAX_PARTS:
            raise PlanError(
                f"{source}: the stream is longer than {MAX_PARTS:,} parts of {self.part_size:,} bytes; "
                "raise --part-size"
            )
        return Part(source, number, (number - 1) * self.part_size, length)

    def parts_of(self, source: Source, done: Container[tuple[Source, int]] = ()) -> Iterator[Part]:
        """The parts of one file source not in ``done``, in order."""
        for number in range(1, self.part_count(source) + 1):
            if (source, number) not in done:
                yield self.part(source, number)

    def part_count(self, source: Source) -> int:
        """How many parts ``source`` is split into."""
        return _ceil_div(self.sizes[source], self.part_size)

    @property
    def total_parts(self) -> int:
        return sum(self.part_count(source) for source in self.sizes)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def part(self, source: Source, number: int) -> Part:
        """Part ``number`` (1-based) of ``source``; the last part holds the remainder."""
        count = self.part_count(source)
        if not 1 <= number <= count:
            raise ValueError(f"{source} has parts 1..{count}, not {number}")
        offset = (number - 1) * self.part_size
        return Part(source, number, offset, min(self.part_size, self.sizes[source] - offset))

    def parts(self, done: Container[tuple[Source, int]] = ()) -> Iterator[Part]:
        """Yield the parts not in ``done`` lazily, interleaved: S1#1, S2#1, S1#2, S2#2, ..., then the rest."""
        counts = [(source, self.part_count(source)) for source in self.sizes]
        longest = max((count for _, count in counts), default=0)
        for number in range(1, longest + 1):
            for source, count in counts:
                if number <= count and (source, number) not in done:
                    yield self.part(source, number)


def make_plan(
    sizes: Mapping[Source, int],
    part_size: int | None = None,
    *,
    default: int = DEFAULT_PART_SIZE,
    streams: Iterable[Source] = (),
) -> Plan:
    """Check the sizes and pick the part size; raise SourceError or PlanError before anything is sent.

    ``part_size`` None means ``default``, grown in whole MiB until every source fits in 10,000 parts.
    An explicit part size is used as given, or refused with the smallest one that would work. With ``streams``
    (sources of unknown length) the part size cannot grow: it is ``part_size`` or ``default``, and every file
    source must fit in it.
    """
    streams = frozenset(streams)
    if not sizes and not streams:
        raise SourceError("a read set needs at least one source")
    if streams:
        fixed = make_plan(sizes, part_size or default) if sizes else Plan(part_size or default)
        return Plan(fixed.part_size, fixed.sizes, streams)
    for source, size in sizes.items():
        if size <= 0:
            raise SourceError(f"{source} is empty: there is nothing to upload")
        if size > MAX_SOURCE_SIZE:
            raise PlanError(
                f"{source} is {size:,} bytes; the service holds at most {MAX_PARTS:,} parts of "
                f"{MAX_PART_SIZE:,} bytes (100 MiB) = {MAX_SOURCE_SIZE:,} bytes per source"
            )
    needed = max(minimum_part_size(size) for size in sizes.values())
    if part_size is None:
        return Plan(max(default, needed), sizes)
    if not 1 <= part_size <= MAX_PART_SIZE:
        raise PlanError(f"part size {part_size:,} bytes is outside 1 byte .. 100 MiB ({MAX_PART_SIZE:,} bytes)")
    plan = Plan(part_size, sizes)
    for source, size in plan.sizes.items():
        if plan.part_count(source) > MAX_PARTS:
            smallest = max(_ceil_div(each, MAX_PARTS) for each in sizes.values())  # the true smallest, to the byte
            whole = f" ({needed // MIB} MiB in whole MiB)" if smallest >= MIB else ""
            raise PlanError(
                f"{source} is {size:,} bytes: part size {part_size:,} bytes would need "
                f"{plan.part_count(source):,} parts (at most {MAX_PARTS:,}); use a part size of at least "
                f"{smallest:,} bytes{whole}"
            )
    return plan


def stream_part(source: Source, number: int, part_size: int) -> Part:
    """Part ``number`` of a source that cannot seek; ``length`` is its most, the reader shortens it."""
    if not 1 <= number <= MAX_PARTS:
        raise PlanError(f"{source} needs more than {MAX_PARTS:,} parts of {part_size:,} bytes; use a larger part size")
    return Part(source, number, (number - 1) * part_size, part_size)
