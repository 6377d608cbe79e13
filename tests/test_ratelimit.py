from __future__ import annotations

import pytest

from async_uploader.core.config import RateLimits
from async_uploader.core.ratelimit import AdaptiveRate, Limiter, RequestKind, TokenBucket
from async_uploader.engine.limiter import LocalLimiter


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def waits(bucket: TokenBucket, n: int) -> list[float]:
    return [round(bucket.reserve_nowait(), 9) for _ in range(n)]


def test_request_kind_names() -> None:
    assert [k.value for k in RequestKind] == ["parts", "control", "listings", "unlimited"]


def test_bucket_staggers_concurrent_callers() -> None:
    bucket = TokenBucket(10.0, 1.0, FakeClock())
    assert waits(bucket, 5) == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_bucket_burst() -> None:
    bucket = TokenBucket(2.0, 3.0, FakeClock())
    assert waits(bucket, 5) == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_bucket_refills_only_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 2.0, clock)
    assert waits(bucket, 2) == [0.0, 0.0]
    clock.advance(0.25)
    assert waits(bucket, 2) == [0.0, 0.25]
    clock.advance(3600)
    assert waits(bucket, 3) == [0.0, 0.0, 0.25]


def test_bucket_rate_holds_over_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, 1.0, clock)
    starts = []
    for _ in range(50):
        starts.append(clock.now + bucket.reserve_nowait())
        clock.advance(0.01)  # callers arrive faster than the rate
    assert starts == sorted(starts)  # fair: nobody overtakes an earlier caller
    span = starts[-1] - starts[0]
    assert span == pytest.approx(49 / 5.0)


def test_bucket_delay_does_not_reserve() -> None:
    bucket = TokenBucket(10.0, 1.0, FakeClock())
    bucket.reserve_nowait()
    assert bucket.delay() == pytest.approx(0.1)
    assert bucket.delay() == pytest.approx(0.1)


def test_set_rate_keeps_debt() -> None:
    bucket = TokenBucket(10.0, 1.0, FakeClock())
    assert waits(bucket, 5) == [0.0, 0.1, 0.2, 0.3, 0.4]  # schedule ends at +0.5
    bucket.set_rate(1.0)
    assert bucket.rate == 1.0
    assert waits(bucket, 2) == [0.5, 1.5]
    bucket.set_rate(100.0)
    assert waits(bucket, 2) == [2.5, 2.51]


def test_bucket_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0)
    with pytest.raises(ValueError):
        TokenBucket(float("inf"))
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0.5)


def test_adaptive_decrease_once_per_window_then_recovery() -> None:
    rate = AdaptiveRate(10.0, beta=0.7, min_rate=0.5, recover_seconds=10.0, window=1.0)
    assert rate.rate == 10.0
    assert rate.on_throttle(0.0) == pytest.approx(7.0)
    for t in (0.0, 0.1, 0.5, 0.99):  # the other 429s of the same burst
        assert rate.on_throttle(t) == pytest.approx(7.0)
    assert rate.decreases == 1
    assert rate.on_success(0.5) == pytest.approx(7.0)
    seen = [rate.on_success(float(t)) for t in range(1, 11)]
    assert seen == sorted(seen)  # recovers monotonically
    assert 7.0 < seen[0] < seen[4] < 10.0
    assert seen[-1] == pytest.approx(10.0)  # back at the pre-throttle rate after recover_seconds
    assert rate.on_success(60.0) == pytest.approx(10.0)  # never above max_rate


def test_adaptive_repeated_throttles_hit_floor() -> None:
    rate = AdaptiveRate(10.0, beta=0.5, min_rate=1.0, window=1.0)
    values = [rate.on_throttle(float(t)) for t in range(0, 20, 2)]
    assert values[:3] == pytest.approx([5.0, 2.5, 1.25])
    assert min(values) == 1.0
    assert rate.decreases == 10


def test_adaptive_cut_during_recovery_starts_from_current_rate() -> None:
    rate = AdaptiveRate(10.0, beta=0.5, recover_seconds=10.0, window=1.0)
    rate.on_throttle(0.0)  # 5.0
    partway = rate.on_success(5.0)
    assert 5.0 < partway < 10.0
    assert rate.on_throttle(5.0) == pytest.approx(partway * 0.5)
    assert rate.on_success(15.0) == pytest.approx(partway)
    assert rate.on_success(40.0) == pytest.approx(10.0)  # probes on past the old rate, up to max_rate


def test_local_limiter_is_a_limiter() -> None:
    assert isinstance(LocalLimiter(), Limiter)


def test_local_limiter_default_quotas_and_margin() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(RateLimits(parts=10.0, control=1.0, listings=5.0, margin=0.8), clock=clock)
    assert limiter.current_rate(RequestKind.PART) == pytest.approx(8.0)
    assert limiter.current_rate(RequestKind.CONTROL) == pytest.approx(0.8)
    assert limiter.current_rate(RequestKind.LISTING) == pytest.approx(4.0)
    assert limiter.current_rate(RequestKind.UNLIMITED) is None
    # a bucket holds one second of its rate: eight parts at once, then one each 1/8 s
    assert [limiter.reserve(RequestKind.PART) for _ in range(10)] == pytest.approx([0.0] * 8 + [0.125, 0.25])
    # kinds do not share tokens
    assert limiter.reserve(RequestKind.CONTROL) == 0.0
    assert limiter.reserve(RequestKind.CONTROL) == pytest.approx(1.25)
    assert limiter.reserve(RequestKind.LISTING) == 0.0


def test_unlimited_kinds_never_wait() -> None:
    limiter = LocalLimiter(RateLimits.unlimited(), clock=FakeClock())
    for kind in RequestKind:
        assert all(limiter.reserve(kind) == 0.0 for _ in range(1000))
        assert limiter.current_rate(kind) is None
        limiter.on_throttle(kind)
        limiter.on_success(kind)
    limited = LocalLimiter(clock=FakeClock())
    assert all(limited.reserve(RequestKind.UNLIMITED) == 0.0 for _ in range(1000))


def test_local_limiter_throttle_then_recovery() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(RateLimits(parts=10.0), clock=clock, recover_seconds=10.0)
    for _ in range(8):  # eight 429s arriving together
        limiter.on_throttle(RequestKind.PART)
    assert limiter.current_rate(RequestKind.PART) == pytest.approx(7.0)
    assert limiter.decreases(RequestKind.PART) == 1
    assert limiter.current_rate(RequestKind.CONTROL) == pytest.approx(1.0)  # other kinds unaffected
    # later reservations are spaced at the lower rate
    clock.advance(5.0)
    first = limiter.reserve(RequestKind.PART)
    second = limiter.reserve(RequestKind.PART)
    assert second - first == pytest.approx(1 / 7.0)
    rates = []
    for _ in range(12):
        clock.advance(1.0)
        limiter.on_success(RequestKind.PART)
        rates.append(limiter.current_rate(RequestKind.PART))
    assert rates[0] is not None and rates[0] > 7.0
    assert rates[-1] == pytest.approx(10.0)
    # back at the top, the bucket holds a second of the rate again
    clock.advance(5.0)
    assert [limiter.reserve(RequestKind.PART) for _ in range(11)] == pytest.approx([0.0] * 10 + [0.1])


def test_local_limiter_not_adaptive() -> None:
    limiter = LocalLimiter(RateLimits(parts=10.0), adaptive=False, clock=FakeClock())
    limiter.on_throttle(RequestKind.PART)
    assert limiter.current_rate(RequestKind.PART) == 10.0
    assert limiter.decreases(RequestKind.PART) == 0


async def test_acquire_sleeps_for_the_reservation() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = LocalLimiter(RateLimits(parts=4.0), clock=FakeClock(), sleep=fake_sleep, burst=1.0)
    for _ in range(3):
        await limiter.acquire(RequestKind.PART)
    await limiter.acquire(RequestKind.UNLIMITED)
    assert slept == pytest.approx([0.25, 0.5])
