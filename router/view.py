"""The live RoutingView the policy reads, and the sink the router feeds after every upstream call.

Health has two sources, both cheap to read at decision time:
- passive: `error_threshold` consecutive failures put a target in cool-down for `cooldown_s`; the first
  request after the cool-down is the one probe (while it runs the target stays "cooling_down" for the
  others; a success resets the count, a failure restarts the cool-down);
- active: health callbacks `() -> bool` per target (e.g. a cached provider breaker state) and pushed
  states (`set_health`), for a background poller in the ingress. Callbacks must not block or do I/O.

Models that scale from zero add two states, pushed by the ingress's replica poll (`set_scale_state`):
"cold" (no replica, none wanted) and "warming" (replicas starting). Both stay routable: `healthy()` is
"may be routed to", and `latency.predict` adds the remaining cold start (the `cold_start_s` prior, then
the measured wake-ups), so a latency-bounded request only waits for a start-up that fits its bound.
`wake(tid)` asks the ingress (through `set_waker`) to wake a cold model; router/cold.py decides when.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from policies.base import LatencyView, QualityPredictor, ViewParts
from policies.types import Target

TargetState = Literal["healthy", "cooling_down", "down", "cold", "warming", "starting"]
ScaleState = Literal["cold", "warming"]
ROUTABLE: frozenset[str] = frozenset({"healthy", "cold", "warming"})


@runtime_checkable
class LearningLatency(Protocol):
    """A latency view that learns from the router's calls: a ticket per call (did it find a free slot?),
    then the call's latency or its failure, then its end."""

    def started(self, target_id: str) -> Any: ...

    def finished(self, target_id: str, ticket: Any = None) -> None: ...

    def observe(self, target_id: str, ttft_ms: float, tpot_ms: float, output_tokens: int,
                queue_ms: float | None = None, ticket: Any = None) -> None: ...

    def error(self, target_id: str) -> None: ...


class LiveView(ViewParts):
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
        cold_start_s: Mapping[str, float] | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._raw_latency = latency
        self._latency = _ColdLatency(latency, self) if cold_start_s else latency
        # Scale-from-zero: the pushed state, the estimated cold start (prior, then measured) and, while a
        # wake-up is under way, when it began.
        self._scale: dict[str, ScaleState] = {}
        self._cold_start_s: dict[str, float] = dict(cold_start_s or {})
        self._measured: dict[str, int] = {}
        self._waking: dict[str, float] = {}
        self._waker: Callable[[str], None] | None = None
        self._quality = quality
        self._checks: dict[str, Callable[[], bool]] = dict(health_checks or {})
        self._pushed: dict[str, bool] = {}
        self._starting: set[str] = set()  # pushed down, but never up yet: still loading (issue 12)
        self._threshold = max(1, error_threshold)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._probe: dict[str, bool] = {}  # after a cool-down: is the one probe call in flight?
        # A static LatencyView learns nothing; a LearningLatency (policies.latency.LatencyEstimator) is fed.
        self._learn: LearningLatency | None = latency if isinstance(latency, LearningLatency) else None

    # -- RoutingView (targets, latency, quality: ViewParts) ------------------------------------------
    @property
    def raw_latency(self) -> LatencyView:
        """The estimator without cold-start waits (what a target would do once warm)."""
        return self._raw_latency

    def healthy(self, target_id: str) -> bool:
        """May a request be routed to it: healthy, or cold/warming (it then waits for the start-up)."""
        return self.state(target_id) in ROUTABLE

    def state(self, target_id: str) -> TargetState:
        if self._pushed.get(target_id) is False:
            return "starting" if target_id in self._starting else "down"
        check = self._checks.get(target_id)
        if check is not None:
            try:
                if not check():
                    return "down"
            except Exception:  # a broken probe must not break routing: treat as down
                return "down"
        if target_id in self._waking:
            return "warming"
        scale = self._scale.get(target_id)
        if scale is not None:
            return scale
        until = self._down_until.get(target_id)
        if until is not None:
            if self._clock() < until:
                return "cooling_down"
            del self._down_until[target_id]  # half-open: the next request is the probe
            self._probe[target_id] = False
        if self._probe.get(target_id):  # one probe is in flight: the others keep routing elsewhere
            return "cooling_down"
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

    # -- scale from zero -----------------------------------------------------------------------------
    def set_starting(self, target_id: str, starting: bool) -> None:
        """A target pushed down that has never been up since this view exists reads "starting"."""
        (self._starting.add if starting else self._starting.discard)(target_id)

    def set_scale_state(self, target_id: str, state: ScaleState | None) -> None:
        """Push "cold" / "warming" from the replica poll (None: replicas are running)."""
        if state is None:
            self._scale.pop(target_id, None)
        else:
            self._scale[target_id] = state

    def set_waker(self, waker: Callable[[str], None] | None) -> None:
        """`waker(tid)` starts a wake-up call (must not block); the ingress reports back with `woke`."""
        self._waker = waker

    def wake(self, target_id: str) -> bool:
        """Wake a cold model (once: a wake-up under way is not repeated). True if one was started."""
        if target_id in self._waking or self._scale.get(target_id) != "cold":
            return False
        self._waking[target_id] = self._clock()
        if self._waker is not None:
            try:
                self._waker(target_id)
            except Exception:  # routing goes on; the poll keeps the state honest
                self._waking.pop(target_id, None)
                return False
        return True

    def woke(self, target_id: str, ok: bool) -> None:
        """The wake-up call returned (ok: a replica answered it). Its duration is the measured cold start."""
        t0 = self._waking.pop(target_id, None)
        if not ok or t0 is None:
            return
        seconds = max(self._clock() - t0, 0.0)
        n = self._measured.get(target_id, 0)
        prior = self._cold_start_s.get(target_id, seconds)
        # the first measurement replaces the prior; later ones move the estimate halfway
        self._cold_start_s[target_id] = seconds if n == 0 else 0.5 * (prior + seconds)
        self._measured[target_id] = n + 1
        self._scale.pop(target_id, None)

    def cold_start(self, target_id: str) -> dict[str, Any]:
        """The cold-start estimate: seconds and whether measured (for /v1/models and the ingress stats)."""
        return {"seconds": round(self._cold_start_s.get(target_id, 0.0), 2),
                "measured": self._measured.get(target_id, 0)}

    def cold_wait_ms(self, target_id: str) -> float:
        """What a request sent now would wait for a start-up: all of it when cold, the rest when warming."""
        state = self._scale.get(target_id)
        t0 = self._waking.get(target_id)
        if state is None and t0 is None:
            return 0.0
        est = self._cold_start_s.get(target_id, 0.0)
        if t0 is None:
            return est * 1000 if state == "cold" else 0.5 * est * 1000  # warming, started by someone else
        # an overdue start-up is not "almost done": keep a fifth of the estimate
        return max(est - (self._clock() - t0), 0.2 * est) * 1000

    # -- feedback from the router --------------------------------------------------------------------
    def started(self, target_id: str) -> Any:
        """A call was sent; returns the ticket to hand to `observe` and `finished`."""
        if self._scale.get(target_id) == "cold":
            self.wake(target_id)  # the call itself makes Serve scale up; measure the start-up alongside
        if self._probe.get(target_id) is False:
            self._probe[target_id] = True  # this call is the probe
        return self._learn.started(target_id) if self._learn is not None else None

    def finished(self, target_id: str, ticket: Any = None) -> None:
        """The call left the target, successfully or not (after `observe`/`error`)."""
        if self._probe.get(target_id):  # the probe ended without a verdict (cancelled): free its slot
            self._probe[target_id] = False
        if self._learn is not None:
            self._learn.finished(target_id, ticket)

    def observe(
        self, target_id: str, ttft_ms: float, tpot_ms: float, output_tokens: int, ticket: Any = None
    ) -> None:
        """A call succeeded: record its latency and reset the failure count."""
        self._consecutive[target_id] = 0
        self._probe.pop(target_id, None)
        if self._learn is not None:
            self._learn.observe(target_id, ttft_ms, tpot_ms, output_tokens, ticket=ticket)

    def error(self, target_id: str) -> None:
        """A call failed on the target's side (not for requests the target rightly refused)."""
        if self._learn is not None:
            self._learn.error(target_id)
        n = self._consecutive.get(target_id, 0) + 1
        self._consecutive[target_id] = n
        if self._probe.pop(target_id, None) is not None or n >= self._threshold:  # a failed probe: cool again
            self._down_until[target_id] = self._clock() + self._cooldown_s
            self._consecutive[target_id] = 0


class _ColdLatency:
    """The estimator's predictions plus the wait for a cold or warming model's start-up."""

    def __init__(self, inner: LatencyView, view: LiveView) -> None:
        self._inner = inner
        self._view = view

    def predict(self, target: Target, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        ttft, e2e = self._inner.predict(target, prompt_tokens, output_tokens)
        wait = self._view.cold_wait_ms(target.id)
        return (ttft + wait, e2e + wait) if wait else (ttft, e2e)

    def __getattr__(self, name: str) -> Any:  # load, set_replicas, observe, ... of the estimator
        if name.startswith("__") or name == "_inner":  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self._inner, name)
