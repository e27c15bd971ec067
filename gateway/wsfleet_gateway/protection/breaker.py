"""A circuit breaker around Redis: stop waiting on a store that keeps failing.

States: ``closed`` (calls go through; `failure_threshold` consecutive
failures open it — with a `failure_window_s`, only when they all fall within
that many seconds, so sporadic failures spread over a long time never add up),
``open`` (calls fail fast for `reset_timeout_s`), then
``half_open`` (one probe call at a time goes through: success closes the
breaker, failure opens it again). Pure and clock-injected; callers report
outcomes with `record_success` / `record_failure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final = (CLOSED, OPEN, HALF_OPEN)

OnChange = Callable[[str, str], None]
"""``(old state, new state)``."""


class CircuitBreaker:
    """See the module docstring."""

    __slots__ = (
        "_clock",
        "_failures",
        "_first_failure_at",
        "_listeners",
        "_opened_at",
        "_probe_started",
        "_state",
        "failure_threshold",
        "failure_window_s",
        "opened_total",
        "reset_timeout_s",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        failure_window_s: float | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold >= 1 and reset_timeout_s > 0 are required")
        if failure_window_s is not None and failure_window_s <= 0:
            raise ValueError("failure_window_s > 0 is required")
        self.failure_threshold = failure_threshold
        self.failure_window_s = failure_window_s
        self._first_failure_at = 0.0
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._listeners: list[OnChange] = []
        self.opened_total = 0

    def on_change(self, listener: OnChange) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> str:
        """The current state (``open`` turns ``half_open`` once the reset timeout passed)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set(HALF_OPEN)
        return self._state

    @property
    def is_open(self) -> bool:
        """True while calls should not wait on the store (open, or half-open with a probe out)."""
        return not self.allow(probe=False)

    def allow(self, probe: bool = True) -> bool:
        """May a call go to the store now? In half-open state one probe at a time is let through.

        `probe` False only asks (a half-open breaker with no probe out answers True
        without starting one).
        """
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        now = self._clock()
        in_flight = (
            self._probe_started is not None and now - self._probe_started < self.reset_timeout_s
        )
        if in_flight:
            return False
        if probe:
            self._probe_started = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probe_started = None
        if self._state != CLOSED:
            self._set(CLOSED)

    def record_failure(self) -> None:
        self._probe_started = None
        if self._state == HALF_OPEN:
            self._open()
            return
        now = self._clock()
        window = self.failure_window_s
        if window is not None and self._failures and now - self._first_failure_at > window:
            self._failures = 0  # the earlier failures are too old to count with this one
        if not self._failures:
            self._first_failure_at = now
        self._failures += 1
        if self._state == CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.opened_total += 1
        self._set(OPEN)

    def _set(self, new: str) -> None:
        old, self._state = self._state, new
        if new == CLOSED:
            self._failures = 0
        if old != new:
            for listener in self._listeners:
                listener(old, new)
