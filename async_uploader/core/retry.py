"""Pure retry policy: classify a failure, count it, and compute the next backoff.

``classify`` decides once what a failure means; ``RetryState`` is immutable: ``after(verdict)`` returns the state
after one more failed try, so the whole history of a request is one value and the backoff a pure function of it.
Randomness is passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .config import RetryConfig
from .errors import ConfigError, RetryExhaustedError, ThrottlingError, UploaderError

__all__ = ["RETRY_MODES", "THROTTLE_BASE_FACTOR", "AwsRetry", "RetryState", "Verdict", "aws_retry", "classify"]

THROTTLE_BASE_FACTOR = 4.0
"""A throttle backs off from ``base_delay × 4``: the quota is shared, so waiting longer helps everyone."""


class Verdict(enum.Enum):
    """What to do after a failed request."""

    RETRY = "retry"
    THROTTLE = "throttle"
    FATAL = "fatal"


def classify(exc: BaseException) -> Verdict:
    """THROTTLE for ThrottlingError, RETRY for another retryable UploaderError, FATAL for anything else."""
    if isinstance(exc, ThrottlingError):
        return Verdict.THROTTLE
    if isinstance(exc, UploaderError) and exc.retryable:
        return Verdict.RETRY
    return Verdict.FATAL


@dataclass(frozen=True, slots=True)
class RetryState:
    """The failures of one request so far: ``attempts`` failed tries, of at most ``max_attempts``."""

    config: RetryConfig
    attempts: int = 0
    throttles: int = 0
    last: Verdict | None = None

    def after(self, verdict: Verdict) -> RetryState:
        """The state after one more failed try, whose failure ``classify`` judged ``verdict``."""
        return replace(
            self,
            attempts=self.attempts + 1,
            throttles=self.throttles + (verdict is Verdict.THROTTLE),
            last=verdict,
        )

    @property
    def exhausted(self) -> bool:
        """True when no try is left: the last failure was fatal, or ``max_attempts`` tries have failed."""
        return self.last is Verdict.FATAL or self.attempts >= self.config.max_attempts

    @property
    def retries(self) -> int:
        """Tries beyond the first that have been started (one per failure that was retried)."""
        return max(0, self.attempts - (1 if self.exhausted else 0))

    def delay(self, rand: float) -> float:
        """Seconds before the next try, full jitter: ``rand × min(max_delay, base × 2**(attempts-1))``.

        ``rand`` is uniform in [0, 1). After a throttle the base is ``base_delay × THROTTLE_BASE_FACTOR``.
        """
        if self.attempts == 0:
            return 0.0
        base = self.config.base_delay
        if self.last is Verdict.THROTTLE:
            base *= THROTTLE_BASE_FACTOR
        # Cap the exponent so a large attempt count never overflows a float.
        ceiling = min(self.config.max_delay, base * 2.0 ** min(self.attempts - 1, 64))
        return rand * ceiling

    def exhausted_error(self, operation: str, exc: BaseException) -> RetryExhaustedError:
        """The error to raise (``from exc``) when a retryable failure outlasted every try."""
        return RetryExhaustedError(f"{operation} failed {self.attempts} times; the last error was: {exc}")

    def timed_out_error(self, operation: str, seconds: float, exc: BaseException | None) -> RetryExhaustedError:
        """The error to raise when an operation outlived its overall deadline, retries included."""
        tries = f"{self.attempts + 1} attempt{'s' if self.attempts else ''}"
        last = f"; the last error was: {exc}" if exc is not None else ""
        return RetryExhaustedError(f"{operation}: no answer within {seconds:g} s ({tries}){last}")


RETRY_MODES = ("legacy", "standard", "adaptive")
"""botocore's retry modes (AWS_RETRY_MODE, a profile's retry_mode)."""


@dataclass(frozen=True)
class AwsRetry:
    """The engine's retry policy and rate adaptation for botocore's retry settings (``aws_retry``)."""

    retry: RetryConfig
    adaptive: bool


def aws_retry(max_attempts: int | None, mode: str | None, default: RetryConfig | None = None) -> AwsRetry:
    """Map botocore's retry settings onto the engine's (README "Retries").

    ``max_attempts`` counts every try, the first included, as botocore's ``max_attempts`` does; unset, the
    engine's default (10: a lost 100 MiB part costs more than a later retry). The backoff is always the
    engine's full jitter (base 0.25 s, at most 20 s: standard mode's ceiling). ``adaptive`` (and no mode at all)
    lowers the request rate on throttles and recovers gradually, as botocore's adaptive mode does;
    ``standard`` and ``legacy`` keep the rate at the quota and only back off.
    """
    base = default or RetryConfig()
    if max_attempts is not None and max_attempts < 1:
        raise ConfigError(f"max attempts {max_attempts} must be at least 1")
    if mode is not None and mode not in RETRY_MODES:
        raise ConfigError(f"retry mode {mode!r} is not one of {', '.join(RETRY_MODES)}")
    retry = replace(base, max_attempts=max_attempts) if max_attempts is not None else base
    return AwsRetry(retry=retry, adaptive=mode in (None, "adaptive"))
