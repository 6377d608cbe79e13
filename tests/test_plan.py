from __future__ import annotations

import inspect

import pytest

from async_uploader.core.config import DEFAULT_PART_SIZE, MAX_PART_SIZE, MAX_PARTS, MIB, Source
from async_uploader.core.errors import PlanError, SourceError
from async_uploader.core.plan import MAX_SOURCE_SIZE, Part, Plan, make_plan, minimum_part_size, stream_part

S1, S2 = Source.SOURCE1, Source.SOURCE2


def covers(plan: Plan, source: Source) -> None:
    """The parts of ``source`` tile it exactly: contiguous, numbered 1.., none empty or too big."""
    parts = [p for p in plan.parts() if p.source is source]
    assert [p.number for p in parts] == list(range(1, plan.part_count(source) + 1))
    offset = 0
    for p in parts:
        assert p.offset == offset
        assert 1 <= p.length <= plan.part_size <= MAX_PART_SIZE
        offset += p.length
    assert offset == plan.sizes[source]


def test_one_byte_last_part() -> None:
    plan = make_plan({S1: 3 * 1000 + 1}, 1000)
    assert plan.part_count(S1) == 4
    assert plan.part(S1, 4) == Part(S1, 4, 3000, 1)
    covers(plan, S1)


def test_exact_multiple_has_no_empty_part() -> None:
    plan = make_plan({S1: 4000}, 1000)
    assert plan.part_count(S1) == 4
    assert plan.part(S1, 4) == Part(S1, 4, 3000, 1000)
    covers(plan, S1)


@pytest.mark.parametrize("size", [1, 999, 1000])
def test_one_part_file(size: int) -> None:
    plan = make_plan({S1: size}, 1000)
    assert list(plan.parts()) == [Part(S1, 1, 0, size)]
    assert plan.total_parts == 1
    assert plan.total_bytes == size


def test_default_part_size_for_small_sources() -> None:
    plan = make_plan({S1: 5, S2: 7}, None)
    assert plan.part_size == DEFAULT_PART_SIZE
    assert plan.total_parts == 2


def test_interleaved_then_rest_of_longer_source() -> None:
    plan = make_plan({S2: 2500, S1: 1200}, 500)
    order = [(p.source.value[-1], p.number) for p in plan.parts()]
    assert order == [("1", 1), ("2", 1), ("1", 2), ("2", 2), ("1", 3), ("2", 3), ("2", 4), ("2", 5)]
    covers(plan, S1)
    covers(plan, S2)
    assert plan.total_parts == 8
    assert plan.total_bytes == 3700


def test_parts_skips_done() -> None:
    plan = make_plan({S1: 3000, S2: 2000}, 1000)
    done = {(S1, 1), (S2, 2), (S1, 3)}
    assert [(p.source, p.number) for p in plan.parts(done=done)] == [(S2, 1), (S1, 2)]
    assert list(plan.parts(done={(p.source, p.number) for p in plan.parts()})) == []


def test_parts_is_lazy_for_20000_parts() -> None:
    plan = make_plan({S1: MAX_PARTS, S2: MAX_PARTS}, 1)
    assert plan.total_parts == 2 * MAX_PARTS
    parts = plan.parts()
    assert inspect.isgenerator(parts)
    assert [next(parts) for _ in range(3)] == [Part(S1, 1, 0, 1), Part(S2, 1, 0, 1), Part(S1, 2, 1, 1)]
    assert sum(1 for _ in parts) == 2 * MAX_PARTS - 3


def test_default_grows_in_whole_mib_to_fit_10000_parts() -> None:
    default = 64 * MIB
    fits = MAX_PARTS * default
    assert make_plan({S1: fits}, None, default=default).part_size == default
    plan = make_plan({S1: 10, S2: fits + 1}, None, default=default)
    assert plan.part_size == default + MIB
    assert plan.part_size % MIB == 0
    assert plan.part_count(S2) == 9_847  # ceil(640,000 MiB + 1 byte / 65 MiB)
    big = make_plan({S1: 800 * 1024 * MIB}, None, default=default)  # 800 GiB
    assert big.part_size == 82 * MIB
    assert big.part_count(S1) <= MAX_PARTS
    assert make_plan({S1: MAX_SOURCE_SIZE}, None, default=default).part_size == MAX_PART_SIZE
    assert make_plan({S1: MAX_SOURCE_SIZE}, None).part_size == MAX_PART_SIZE == DEFAULT_PART_SIZE


def test_minimum_part_size() -> None:
    assert minimum_part_size(1) == MIB
    assert minimum_part_size(MAX_PARTS * MIB) == MIB
    assert minimum_part_size(MAX_PARTS * MIB + 1) == 2 * MIB
    assert minimum_part_size(MAX_SOURCE_SIZE) == MAX_PART_SIZE


def test_too_large_source_names_size_and_limit() -> None:
    with pytest.raises(PlanError) as info:
        make_plan({S1: 10, S2: MAX_SOURCE_SIZE + 1}, None)
    message = str(info.value)
    assert "SOURCE2" in message
    assert f"{MAX_SOURCE_SIZE + 1:,}" in message
    assert f"{MAX_SOURCE_SIZE:,}" in message


def test_explicit_part_size_too_small_names_minimum() -> None:
    size = 200 * 1024 * MIB  # 200 GiB needs 20.48 MiB parts → 21 MiB
    with pytest.raises(PlanError) as info:
        make_plan({S1: size}, 16 * MIB)
    smallest = -(-size // MAX_PARTS)  # 21,474,837 bytes: the smallest that works, to the byte
    assert f"at least {smallest:,} bytes (21 MiB in whole MiB)" in str(info.value)
    assert make_plan({S1: size}, smallest).part_count(S1) <= MAX_PARTS
    assert make_plan({S1: size}, 21 * MIB).part_count(S1) <= MAX_PARTS
    with pytest.raises(PlanError, match=r"at least 101 bytes$"):
        make_plan({S1: 1_000_001, S2: 10}, 100)


def test_explicit_part_size_is_kept() -> None:
    assert make_plan({S1: 10 * MIB}, 5 * MIB + 3).part_size == 5 * MIB + 3


@pytest.mark.parametrize("part_size", [0, -1, MAX_PART_SIZE + 1])
def test_part_size_out_of_range(part_size: int) -> None:
    with pytest.raises(PlanError):
        make_plan({S1: 10}, part_size)


@pytest.mark.parametrize("sizes", [{S1: 0}, {S1: 10, S2: 0}, {}])
def test_empty_source(sizes: dict[Source, int]) -> None:
    with pytest.raises(SourceError):
        make_plan(sizes, None)


def test_part_number_out_of_range() -> None:
    plan = make_plan({S1: 10}, 4)
    with pytest.raises(ValueError):
        plan.part(S1, 0)
    with pytest.raises(ValueError):
        plan.part(S1, 4)


def test_stream_part() -> None:
    assert stream_part(S2, 3, 100) == Part(S2, 3, 200, 100)
    with pytest.raises(PlanError):
        stream_part(S1, MAX_PARTS + 1, 100)
