"""Circuit breaker for one upstream target (closed -> open -> half-open -> closed).

Pure Python with an injected clock so the state machine is testable without sleeping. The breaker
counts *attempts* against the provider (retries are wrapped around it, the usual Retry-outside-
CircuitBreaker composition), so a burst of failing retries opens it quickly and a retry loop stops
as soon as it opens.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BreakerState = Literal["closed", "open", "half_open"]


class BreakerConfig(BaseModel):
    """When a target is taken out of service and how it is let back in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed attempts that open the breaker."
    )
    window_s: float = Field(
        default=60.0, gt=0, description="Sliding window for the failure-rate rule, seconds."
    )
    failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="Failure share within the window that opens the breaker."
    )
    min_calls: int = Field(
        default=10, ge=1, description="Attempts needed in the window before the failure-rate rule applies."
    )
    open_s: float = Field(
        default=30.0, gt=0, description="Cool-down while open before one probe is let through (half-open)."
    )
    half_open_probes: int = Field(
        default=1, ge=1, description="Concurrent probe calls allowed while half-open."
    )


class CircuitBreaker:
    """Not thread-safe by design: one breaker lives in one asyncio event loop (one Serve replica).

    Usage per attempt: `if breaker.acquire(): ...call...; record_success() | record_failure() | release()`.
    `release()` ends a call without a verdict (e.g. the caller went away), freeing a probe slot.
    """

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._probes = 0
        self.last_failure: str | None = None

    # -- reading ----------------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.config.open_s:
            self._state = "half_open"
            self._probes = 0
        return self._state

    def peek(self) -> BreakerState:
        """The state as `state` would report it, without making the open -> half-open move (reads such as
        health polls must not change what the next call sees)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.config.open_s:
            return "half_open"
        return self._state

    @property
    def healthy(self) -> bool:
        """False only while open; half-open counts as healthy so the router sends the probe."""
        return self.peek() != "open"

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.peek() != "open":
            return 0.0
        return max(0.0, self.config.open_s - (self._clock() - self._opened_at))

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.peek(),
            "healthy": self.healthy,
            "consecutive_failures": self._consecutive,
            "retry_in_s": round(self.retry_in_s(), 3),
            "last_failure": self.last_failure,
        }

    # -- calls ------------------------------------------------------------------------------------
    def acquire(self) -> bool:
        """May a call go to the target now? In half-open this takes one probe slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self.config.half_open_probes:
            self._probes += 1
            return True
        return False

    def release(self) -> None:
        if self._state == "half_open" and self._probes > 0:
            self._probes -= 1

    def record_success(self) -> None:
        state = self.state
        if state == "half_open":
            self._close()
        elif state == "closed":
            self._consecutive = 0
            self._push(failed=False)
        # A late success from a call admitted before the breaker opened does not close it.

    def record_failure(self, reason: str | None = None) -> None:
        if reason:
            self.last_failure = reason
        state = self.state
        if state == "half_open":
            self._open()
        elif state == "closed":
            self._consecutive += 1
            self._push(failed=True)
            if self._consecutive >= self.config.failure_threshold or self._rate_tripped():
                self._open()

    # -- internals --------------------------------------------------------------------------------
    def _push(self, *, failed: bool) -> None:
        now = self._clock()
        self._window.append((now, failed))
        horizon = now - self.config.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _rate_tripped(self) -> bool:
        n = len(self._window)
        if n < self.config.min_calls:
            return False
        return sum(1 for _, failed in self._window if failed) / n >= self.config.failure_rate

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probes = 0

    def _close(self) -> None:
        self._state = "closed"
        self._consecutive = 0
        self._probes = 0
        self._window.clear()
