"""The live RoutingView the policy reads, and the sink the router feeds after every upstream call.

Health has two sources, both cheap to read at decision time:
- passive: `error_threshold` consecutive failures put a target in cool-down for `cooldown_s`; the first
  request after the cool-down is the probe (a success resets the count, a failure restarts it);
- active: health callbacks `() -> bool` per target (e.g. a cached provider breaker state) and pushed
  states (`set_health`), for a background poller in the ingress. Callbacks must not block or do I/O.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from policies.base import LatencyView, QualityPredictor
from policies.types import Target

TargetState = Literal["healthy", "cooling_down", "down"]


def _noop(*_args: Any, **_kw: Any) -> None:
    return None


class LiveView:
    """Implements `policies.base.RoutingView` over a latency view, a quality predictor and health."""

    def __init__(
        self,
        targets: Sequence[Target],
        latency: LatencyView,
        quality: QualityPredictor,
        *,
        health_checks: Mapping[str, Callable[[], bool]] | None = None,
        error_threshold: int = 3,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = tuple(targets)
        self._latency = latency
        self._quality = quality
        self._checks: dict[str, Callable[[], bool]] = dict(health_checks or {})
        self._pushed: dict[str, bool] = {}
        self._threshold = max(1, error_threshold)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        # The estimator's feedback methods are optional (a static LatencyView has none): bind once.
        self._started = getattr(latency, "started", _noop)
        self._finished = getattr(latency, "finished", _noop)
        self._observe = getattr(latency, "observe", _noop)
        self._error = getattr(latency, "error", _noop)
        # LatencyEstimator hands out a ticket per request (did it find a free slot?); older or static
        # views take none.
        try:
            self._tickets = "ticket" in inspect.signature(self._observe).parameters
        except (TypeError, ValueError):
            self._tickets = False

    # -- RoutingView ---------------------------------------------------------------------------------
    @property
    def targets(self) -> Sequence[Target]:
        return self._targets

    @property
    def latency(self) -> LatencyView:
        return self._latency

    @property
    def quality(self) -> QualityPredictor:
        return self._quality

    def healthy(self, target_id: str) -> bool:
        return self.state(target_id) == "healthy"

    def state(self, target_id: str) -> TargetState:
        if self._pushed.get(target_id) is False:
            return "down"
        check = self._checks.get(target_id)
        if check is not None:
            try:
                if not check():
                    return "down"
            except Exception:  # a broken probe must not break routing: treat as down
                return "down"
        until = self._down_until.get(target_id)
        if until is not None:
            if self._clock() < until:
                return "cooling_down"
            del self._down_until[target_id]  # half-open: the next request is the probe
        return "healthy"

    # -- health inputs -------------------------------------------------------------------------------
    def add_health_check(self, target_id: str, check: Callable[[], bool]) -> None:
        self._checks[target_id] = check

    def set_health(self, target_id: str, healthy: bool | None) -> None:
        """Push a state (None clears it, leaving callbacks and passive health)."""
        if healthy is None:
            self._pushed.pop(target_id, None)
        else:
            self._pushed[target_id] = healthy

    # -- feedback from the router --------------------------------------------------------------------
    def started(self, target_id: str) -> Any:
        """A call was sent; returns the ticket to hand to `observe` and `finished`."""
        return self._started(target_id)

    def finished(self, target_id: str, ticket: Any = None) -> None:
        """The call left the target, successfully or not (after `observe`/`error`)."""
        if self._tickets:
            self._finished(target_id, ticket)
        else:
            self._finished(target_id)

    def observe(
        self, target_id: str, ttft_ms: float, tpot_ms: float, output_tokens: int, ticket: Any = None
    ) -> None:
        """A call succeeded: record its latency and reset the failure count."""
        self._consecutive[target_id] = 0
        if self._tickets:
            self._observe(target_id, ttft_ms, tpot_ms, output_tokens, ticket=ticket)
        else:
            self._observe(target_id, ttft_ms, tpot_ms, output_tokens)

    def error(self, target_id: str) -> None:
        """A call failed on the target's side (not for requests the target rightly refused)."""
        self._error(target_id)
        n = self._consecutive.get(target_id, 0) + 1
        self._consecutive[target_id] = n
        if n >= self._threshold:
            self._down_until[target_id] = self._clock() + self._cooldown_s
            self._consecutive[target_id] = 0
