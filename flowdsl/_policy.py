"""Retry and timeout policy: which failures are retried, and when.

Pure functions of the options and the attempt number; the scheduler applies
them and the faces only supply the time. Jitter is drawn from a hash of the
run, node, item and attempt rather than a random generator, so a run's
delays are reproducible, and the same after a resume.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Tuple, Type, Union

import attrs

from .exceptions import DefinitionError, FlowdslError, NodeTimeout

__all__ = ["RetryOn", "RetryPolicy", "make_policy"]

RetryOn = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


@attrs.frozen
class RetryPolicy:
    """How a node's (or each batch item's) attempts are made.

    Attributes:
        retries: Extra attempts after the first.
        retry_delay: Seconds before the first retry.
        backoff: Each later delay is the previous one times this.
        max_delay: No delay is longer than this (None: no cap).
        jitter: Up to this many seconds are added to each delay.
        retry_on: Only exceptions of these types are retried.
        timeout: Seconds an attempt may take (None: no limit).
    """

    retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None

    def retryable(self, exc: BaseException, attempt: int) -> bool:
        """Whether failed attempt number `attempt` (1-based) gets another go.

        flowdsl's own definition errors are never retried, whatever
        `retry_on` says: they fail the same way every time.
        """
        if attempt > self.retries:
            return False
        if isinstance(exc, FlowdslError) and not isinstance(exc, NodeTimeout):
            return False
        return isinstance(exc, self.retry_on)

    def delay(self, attempt: int, key: str) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Args:
            attempt: The attempt that just failed.
            key: Identifies the run, node and item, for the jitter.
        """
        delay = self.retry_delay * self.backoff ** (attempt - 1)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        if self.jitter:
            digest = hashlib.blake2b(f"{key}:{attempt}".encode(), digest_size=8)
            delay += self.jitter * int.from_bytes(digest.digest(), "big") / 2.0**64
        return delay


def _seconds(name: str, option: str, value: Any, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise DefinitionError(f"node {name!r}: {option} must be {need}, got {value!r}.")
    return float(value)


def make_policy(
    name: str,
    *,
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    jitter: float = 0.0,
    retry_on: RetryOn = (Exception,),
    timeout: float | None = None,
) -> RetryPolicy:
    """Check the retry and timeout options of node `name`.

    Raises:
        DefinitionError: An option has a wrong type or value.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DefinitionError(
            f"node {name!r}: retries must be a whole number >= 0 (extra attempts), "
            f"got {retries!r}."
        )
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, (int, float))
        or not (math.isfinite(backoff) and backoff >= 1)
    ):
        raise DefinitionError(f"node {name!r}: backoff must be >= 1, got {backoff!r}.")
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not types or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in types
    ):
        raise DefinitionError(
            f"node {name!r}: retry_on must be an exception type or a tuple of them, "
            f"got {retry_on!r}."
        )
    return RetryPolicy(
        retries=retries,
        retry_delay=_seconds(name, "retry_delay", retry_delay),
        backoff=float(backoff),
        max_delay=None if max_delay is None else _seconds(name, "max_delay", max_delay),
        jitter=_seconds(name, "jitter", jitter),
        retry_on=types,
        timeout=None
        if timeout is None
        else _seconds(name, "timeout", timeout, positive=True),
    )
