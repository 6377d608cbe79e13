"""core.concurrency's tuner in simulated worlds (an injected clock, throughput as a function of the limit), and
engine.slots' limit that moves while requests hold slots."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from async_uploader.core.concurrency import ConcurrencyTuner, Phase
from async_uploader.core.config import RateLimits, RetryConfig
from async_uploader.edge.client import OmicsClient
from async_uploader.engine.calls import Calls, first_level
from async_uploader.engine.limiter import LocalLimiter
from async_uploader.engine.slots import Slots

MB = 1_000_000
World = Callable[[int], float]


def run(
    tuner: ConcurrencyTuner,
    world: World,
    seconds: float,
    limited: bool = True,
    busy: Callable[[int], float | None] = lambda limit: None,
    own: float | None = None,
) -> list[int]:
    """The limits the tuner holds, window by window, when ``world(limit)`` bytes per second flow and the cores are
    ``busy(limit)`` of the time busy, ``own`` of it this process's (None: unknown)."""
    now, sent, limits = 0.0, 0.0, []
    tuner.observe(now, 0, limited)
    while now < seconds:
        now += tuner.window * 1.001  # a window ends at the first event after it is over
        sent += world(tuner.limit) * tuner.window
        limits.append(tuner.observe(now, int(sent), limited, busy(tuner.limit), own))
    return limits


def capped_connections(per_connection: float, link: float = float("inf")) -> World:
    """A distant service: every request gets ``per_connection`` until the link is full."""
    return lambda limit: min(limit * per_connection, link)


def busy_machine(best: int, peak: float) -> World:
    """Two cores shared with the store: throughput rises to ``best`` requests, then contention takes 4% a step."""
    return lambda limit: peak * limit / best if limit <= best else peak * (1 - 0.04 * (limit - best))


def filling_buffers(world: World, per_connection: float, window: float = 0.1) -> World:
    """``world``, where each connection a higher limit opens first takes ``per_connection`` bytes at once (the
    socket buffers on its way filling) in the window after the limit rose."""
    last = [0]

    def rate(limit: int) -> float:
        extra = max(0, limit - last[0]) * per_connection / window
        last[0] = limit
        return world(limit) + extra

    return rate


def test_a_distant_service_gets_every_request_it_can_use_within_a_few_windows() -> None:
    tuner = ConcurrencyTuner(maximum=64)
    limits = run(tuner, capped_connections(25 * MB), 5)
    # two windows of warm-up, then each level is measured over three: 8 -> 16 -> (each request added its share) 64
    assert limits[:10] == [8, 8, 8, 8, 16, 16, 16, 16, 16, 64]
    assert set(limits[9:]) == {64}


def test_buffers_filling_on_new_connections_do_not_pass_for_the_level_s_throughput() -> None:
    """Each new connection to a capped service first puts 30 MB into buffers: counted as the start level's
    throughput, the first doubling looked worthless and the tuner halved to 2 (measured through a TLS terminator
    at 25 MB/s per connection: 2 x 1 GiB took 17 s instead of 7)."""
    world = filling_buffers(capped_connections(25 * MB), 30 * MB)
    counted = run(ConcurrencyTuner(maximum=64, start=4, warmup=0), world, 3)  # counted from the start
    assert min(counted) == 2 and counted[-1] <= 5
    tuner = ConcurrencyTuner(maximum=64, start=4)
    limits = run(tuner, filling_buffers(capped_connections(25 * MB), 30 * MB), 3)
    assert limits[-1] == 64 and min(limits) == 4


def test_a_link_that_fills_is_not_pushed_past_its_knee() -> None:
    tuner = ConcurrencyTuner(maximum=64)
    limits = run(tuner, capped_connections(25 * MB, link=400 * MB), 1.5)  # full at 16 requests
    assert limits[-1] == 16 and tuner.phase is Phase.HOLDING


def test_a_busy_machine_is_given_fewer_requests_than_the_start() -> None:
    tuner = ConcurrencyTuner(maximum=64)
    limits = run(tuner, busy_machine(best=4, peak=1000 * MB), 3)
    assert limits[-1] == 4, limits
    flat = ConcurrencyTuner(maximum=64)
    assert run(flat, lambda limit: 1000 * MB if limit >= 2 else 600 * MB, 3)[-1] == 2  # as fast with 2 as with 8


def test_saturated_cores_go_down_first_instead_of_trying_twice_the_requests() -> None:
    """Through a terminator on two busy cores, doubling first cost a short upload a tenth of its time."""
    saturated = run(ConcurrencyTuner(maximum=64, start=4), busy_machine(best=2, peak=600 * MB), 2, busy=lambda _: 0.92)
    assert max(saturated) == 4 and saturated[4] == 2 and saturated[-1] == 2, saturated
    # the same world with idle cores (or none measured): the first doubling is tried, then undone
    for busy in (lambda _: 0.6, lambda _: None):
        tried = run(ConcurrencyTuner(maximum=64, start=4), busy_machine(best=2, peak=600 * MB), 2, busy=busy)
        assert tried[4] == 8 and tried[-1] <= 2, tried


def test_cores_busy_with_this_process_alone_hold_the_start() -> None:
    """Under a CPU quota that holds the uploader alone, going down frees nothing for anyone (in a cgroup of half a
    CPU the halving cost bytes and was undone). The start is held; the probes still try more."""
    tuner = ConcurrencyTuner(maximum=64, start=4, probe_every=1.0)
    alone = run(tuner, busy_machine(best=4, peak=600 * MB), 3, busy=lambda _: 0.97, own=0.9)
    assert alone[4] == 4 and tuner.phase is not Phase.DESCENDING and max(alone) == 5 and alone[-1] == 4, alone
    assert tuner.own == pytest.approx(0.9)
    # the same cores with a fifth or more of their time taken by other work (a store, a terminator): down first
    world = busy_machine(best=2, peak=600 * MB)
    shared = run(ConcurrencyTuner(maximum=64, start=4), world, 2, busy=lambda _: 0.97, own=0.75)
    assert shared[4] == 2 and shared[-1] == 2, shared


def test_requests_that_each_add_their_share_come_back_after_a_first_step_down() -> None:
    """Busy cores, but each request capped (a pipeline's work beside a nearby service that caps each connection):
    halving costs bytes, so the first level is held, and each probe that pays is kept."""
    tuner = ConcurrencyTuner(maximum=64, start=4, probe_every=1.0)
    limits = run(tuner, capped_connections(25 * MB), 8, busy=lambda _: 1.0)
    assert limits[4] == 2 and limits[9] == 4 and limits[-1] > 4, limits
    assert tuner.busy == 1.0


def test_a_distant_store_climbs_whatever_the_load() -> None:
    """Far away each connection is held to its window per round trip: busy cores still gave more bytes to more
    requests (under the service's quota through stunnel, going down first from 16 cost a fifth of the speed)."""
    tuner = ConcurrencyTuner(maximum=64, start=4)
    tuner.round_trip(0.020)
    limits = run(tuner, capped_connections(25 * MB), 2, busy=lambda _: 0.9)
    assert limits[0] == 16 and limits[4] == 32 and limits[-1] == 64, limits


def test_one_window_of_unknown_load_leaves_the_span_unknown() -> None:
    answers = iter([0.9, 0.9, 0.9, None])  # two windows of warm-up, then three judged
    tuner = ConcurrencyTuner(maximum=64, start=4)
    limits = run(tuner, busy_machine(best=2, peak=600 * MB), 0.6, busy=lambda _: next(answers, 0.9))
    assert tuner.busy is None and limits[-1] == 8  # judged by throughput alone: the doubling is tried


def test_nothing_is_judged_while_the_limit_holds_nothing_back() -> None:
    tuner = ConcurrencyTuner(maximum=64)
    assert set(run(tuner, busy_machine(best=2, peak=100 * MB), 3, limited=False)) == {8}
    assert tuner.changes == 0


def test_holding_it_probes_again_and_follows_a_link_that_frees_up() -> None:
    capacity = [200 * MB]
    tuner = ConcurrencyTuner(maximum=64, probe_every=1.0)
    run(tuner, lambda limit: min(limit * 25 * MB, capacity[0]), 2)
    assert tuner.limit == 8
    capacity[0] = 1000 * MB
    limits = run(tuner, lambda limit: min(limit * 25 * MB, capacity[0]), 20)
    assert limits[-1] >= 32  # a quarter more per probe while each pays
    capacity[0] = 100 * MB  # a probe that brings nothing is undone
    before = tuner.limit
    assert run(tuner, lambda limit: min(limit * 25 * MB, capacity[0]), 5)[-1] == before


@given(
    maximum=st.integers(1, 200),
    start=st.integers(1, 64),
    rates=st.lists(st.floats(0, 1e10, allow_nan=False), min_size=1, max_size=60),
    limited=st.lists(st.booleans(), min_size=1, max_size=60),
)
def test_the_limit_stays_between_minimum_and_maximum_whatever_the_rates(
    maximum: int, start: int, rates: list[float], limited: list[bool]
) -> None:
    tuner = ConcurrencyTuner(maximum=maximum, start=start)
    now, sent = 0.0, 0.0
    for step, rate in enumerate(rates):
        sent += rate * tuner.window
        now += tuner.window * (1 + step % 3)
        limit = tuner.observe(now, int(sent), limited[step % len(limited)])
        assert 1 <= limit <= maximum


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        ConcurrencyTuner(maximum=0)


async def test_slots_hold_back_new_holders_only_when_the_limit_falls() -> None:
    slots = Slots(4)
    for _ in range(4):
        await slots.acquire()
    entered: list[int] = []

    async def holder(number: int) -> None:
        await slots.acquire()
        entered.append(number)

    async with anyio.create_task_group() as group:
        for number in range(3):
            group.start_soon(holder, number)
        await anyio.wait_all_tasks_blocked()
        assert entered == [] and slots.in_flight == 4
        slots.limit = 2  # lowered: the four holders keep their slots, waiters wait for two to leave
        slots.release()
        slots.release()
        slots.release()
        await anyio.wait_all_tasks_blocked()
        assert entered == [0] and slots.in_flight == 2
        slots.limit = 4
        slots.release()  # first come, first served
        await anyio.wait_all_tasks_blocked()
    assert entered == [0, 1, 2] and slots.peak == 4


async def test_a_cancelled_waiter_gives_its_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    with anyio.move_on_after(0.05):
        await slots.acquire()
    assert slots.in_flight == 1
    slots.release()
    await slots.acquire()  # nothing leaked: the slot is there
    assert slots.in_flight == 1


async def test_slots_with_a_tuner_follow_the_bytes_sent() -> None:
    clock = [0.0]
    tuner = ConcurrencyTuner(maximum=64)
    slots = Slots(64, tuner, clock=lambda: clock[0])
    assert slots.limit == 8

    async def part() -> None:
        await slots.acquire()  # and past the rate limiter at once: no quota

    async def windows(count: int) -> None:
        for _ in range(count):
            clock[0] += tuner.window * 1.001
            slots.sent(slots.limit * 25 * MB // 10)  # every request adds its share
            await anyio.wait_all_tasks_blocked()

    async with anyio.create_task_group() as group:
        for _ in range(48):
            group.start_soon(part)  # more parts ready than slots: the limit holds them back
        await anyio.wait_all_tasks_blocked()
        slots.sent(1)  # the first window begins
        await windows(10)
        assert slots.limit == 64 and slots.in_flight == 48
    assert slots.peak == 48


async def test_slots_waiting_for_the_quota_say_nothing_about_the_limit() -> None:
    """Under a quota, parts hold slots while they wait for tokens: the tuner is not asked to judge."""
    clock = [0.0]
    tuner = ConcurrencyTuner(maximum=64)
    slots = Slots(64, tuner, clock=lambda: clock[0])
    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(slots.acquire)
        await anyio.wait_all_tasks_blocked()
        since = slots.hold()  # one of the eight holders waits for a token
        slots.sent(1)
        for _ in range(20):
            clock[0] += tuner.window * 1.001
            slots.sent(25 * MB // 10)
        assert slots.limit == 8 and tuner.changes == 0
        slots.unhold(since)
        group.cancel_scope.cancel()


async def test_slots_tell_the_tuner_how_busy_the_cores_were_each_window() -> None:
    clock, asked = [0.0], []
    tuner = ConcurrencyTuner(maximum=64, start=4)

    def load() -> tuple[float, float]:
        asked.append(clock[0])
        return 0.95, 0.3  # two thirds of the cores' time other work's

    slots = Slots(64, tuner, clock=lambda: clock[0], load=load)
    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(slots.acquire)
        await anyio.wait_all_tasks_blocked()
        slots.sent(1)  # the first window begins
        for _ in range(5):
            clock[0] += tuner.window * 1.001
            slots.sent(slots.limit * 25 * MB // 10)  # twice the requests would move twice the bytes, but ...
        assert slots.limit == 2 and tuner.busy == pytest.approx(0.95)  # ... the cores are busy: down first
        assert tuner.own == pytest.approx(0.3)
        group.cancel_scope.cancel()
    assert len(asked) == 6  # once per window, the first to begin measuring


def test_the_self_tuning_starts_at_two_requests_per_core_from_four_to_eight(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, level in ((1, 4), (2, 4), (3, 6), (4, 8), (64, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert first_level() == level


def test_a_distant_store_starts_at_the_distant_level_and_a_near_one_at_the_start() -> None:
    far = ConcurrencyTuner(maximum=64, start=4)
    far.round_trip(0.030)  # the probe, on a new connection
    far.round_trip(0.021)  # a listing on the same connection: the quickest counts
    assert far.observe(0.0, 0, True) == 16
    limits = run(far, capped_connections(25 * MB), 2)
    assert limits[-1] == 64  # the climb goes on from there
    near = ConcurrencyTuner(maximum=64, start=4)
    near.round_trip(0.030)  # a handshake's first answer ...
    near.round_trip(0.002)  # ... and then a nearby store's
    assert near.observe(0.0, 0, True) == 4
    late = ConcurrencyTuner(maximum=64, start=4)
    late.observe(0.0, 0, True)
    late.round_trip(0.050)  # told once the parts are going: too late to change the start
    assert late.limit == 4 and late.changes == 0
    capped = ConcurrencyTuner(maximum=8, start=4)
    capped.round_trip(0.030)
    assert capped.observe(0.0, 0, True) == 8  # never above the maximum


def test_a_distant_busy_machine_still_goes_down() -> None:
    tuner = ConcurrencyTuner(maximum=64, start=4)
    tuner.round_trip(0.030)
    limits = run(tuner, busy_machine(best=4, peak=1000 * MB), 4)
    assert limits[0] == 16 and limits[-1] <= 8, limits


async def test_the_calls_tell_the_tuner_how_far_the_store_is() -> None:
    """A listing answered after 30 ms, before any part: the first part finds sixteen slots, not the near start."""
    calls = Calls(
        cast(OmicsClient, None),
        LocalLimiter(RateLimits.unlimited()),
        RetryConfig(),
        max_concurrency=64,
        operation_timeout=5,
        adaptive_concurrency=True,
    )

    async def answered_late() -> str:
        await anyio.sleep(0.03)  # never returns early: the round trip is at least this
        return "ok"

    assert await calls.call("ListReadSets", answered_late) == "ok"
    assert calls.slots.limit == first_level()
    await calls.slots.acquire()  # the first part: the first window starts, at the distant level
    assert calls.slots.limit == 16
