from __future__ import annotations

import asyncio

import pytest

from async_uploader.core.config import RetryConfig
from async_uploader.core.errors import (
    AccessDeniedError,
    CheckpointError,
    InternalServerError,
    NotSupportedOperationError,
    RequestTimeoutError,
    ResourceNotFoundError,
    RetryExhaustedError,
    ServiceQuotaExceededError,
    SourceError,
    ThrottlingError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from async_uploader.core.retry import THROTTLE_BASE_FACTOR, RetryState, Verdict, classify


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (ThrottlingError("slow down", status=429), Verdict.THROTTLE),
        (RequestTimeoutError("t", status=408), Verdict.RETRY),
        (InternalServerError("i", status=500), Verdict.RETRY),
        (UnavailableError("u", status=503), Verdict.RETRY),
        (TransportError("reset"), Verdict.RETRY),
        (ValidationError("v", status=400), Verdict.FATAL),
        (ServiceQuotaExceededError("q", status=402), Verdict.FATAL),
        (AccessDeniedError("a", status=403), Verdict.FATAL),
        (ResourceNotFoundError("n", status=404), Verdict.FATAL),
        (NotSupportedOperationError("n", status=405), Verdict.FATAL),
        (SourceError("gone"), Verdict.FATAL),
        (CheckpointError("disk"), Verdict.FATAL),
        (OSError("raw"), Verdict.FATAL),
        (asyncio.CancelledError(), Verdict.FATAL),
        (KeyboardInterrupt(), Verdict.FATAL),
    ],
)
def test_classify(exc: BaseException, verdict: Verdict) -> None:
    assert classify(exc) is verdict


def test_state_is_immutable_and_counts() -> None:
    config = RetryConfig(max_attempts=3, base_delay=1.0, max_delay=100.0)
    start = RetryState(config)
    one = start.after(classify(TransportError("reset")))
    two = one.after(classify(ThrottlingError("slow", status=429)))
    assert (start.attempts, start.throttles, start.exhausted) == (0, 0, False)
    assert (one.attempts, one.throttles, one.last) == (1, 0, Verdict.RETRY)
    assert (two.attempts, two.throttles, two.last) == (2, 1, Verdict.THROTTLE)
    assert not two.exhausted
    with pytest.raises(AttributeError):
        start.attempts = 5  # type: ignore[misc]


def test_exhausted_after_max_attempts_total_tries() -> None:
    state = RetryState(RetryConfig(max_attempts=4))
    tries = 0
    while True:
        tries += 1  # a try is made, and fails
        state = state.after(classify(InternalServerError("boom", status=500)))
        if state.exhausted:
            break
    assert tries == 4
    assert state.retries == 3


def test_one_attempt_means_no_retry() -> None:
    state = RetryState(RetryConfig(max_attempts=1)).after(classify(TransportError("reset")))
    assert state.exhausted
    assert state.retries == 0


def test_fatal_is_exhausted_at_once() -> None:
    state = RetryState(RetryConfig(max_attempts=10)).after(classify(AccessDeniedError("no", status=403)))
    assert state.exhausted
    assert state.last is Verdict.FATAL


def test_full_jitter_exponential_backoff() -> None:
    state = RetryState(RetryConfig(max_attempts=20, base_delay=0.5, max_delay=10.0))
    assert state.delay(0.99) == 0.0
    ceilings = []
    for _ in range(8):
        state = state.after(classify(TransportError("reset")))
        ceilings.append(state.delay(1.0))
        assert state.delay(0.0) == 0.0
        assert state.delay(0.5) == pytest.approx(ceilings[-1] / 2)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_throttle_backs_off_more() -> None:
    config = RetryConfig(max_attempts=10, base_delay=0.25, max_delay=20.0)
    error = RetryState(config).after(classify(InternalServerError("x", status=500)))
    throttle = RetryState(config).after(classify(ThrottlingError("x", status=429)))
    assert throttle.delay(0.5) == pytest.approx(error.delay(0.5) * THROTTLE_BASE_FACTOR)
    assert throttle.delay(0.5) > error.delay(0.5)
    # still capped by max_delay
    many = RetryState(config, attempts=30, last=Verdict.THROTTLE)
    assert many.delay(0.999) <= config.max_delay


def test_huge_attempt_count_does_not_overflow() -> None:
    state = RetryState(RetryConfig(max_attempts=10_000, base_delay=1, max_delay=5), attempts=5000)
    assert state.delay(0.5) == 2.5


def test_exhausted_error_message() -> None:
    state = RetryState(RetryConfig(max_attempts=2))
    cause = UnavailableError("bad gateway", status=502, operation="UploadReadSetPart")
    state = state.after(classify(cause)).after(classify(cause))
    error = state.exhausted_error("UploadReadSetPart SOURCE1 #7", cause)
    assert isinstance(error, RetryExhaustedError)
    assert "failed 2 times" in str(error)
    assert "bad gateway" in str(error)
