"""Routing around models that scale from zero: wake the cold model the policy wants, serve meanwhile
from the best warm target, and shift back once it is up.

`ColdAware` wraps any registered policy (the policies themselves know nothing of cold starts). With no
cold or warming target it is one plain `decide`. Otherwise, for a request:
1. warm decision: the policy over the targets that are up (cold/warming ones hidden);
2. wish: the policy as if every cold target were warm; if that picks a cold one, wake it (a wake-up
   call through the view; Serve's autoscaler counts it and starts a replica);
3. a warm decision that routes wins (the request is served now, by the cheapest warm target that
   fits); else the policy over all targets with the cold start added to their predicted latency (a
   request without a latency bound, or with one that the start-up fits, then waits for the model);
   else the warm decision (fallback / best effort / reject) stands.
Once the poll sees a RUNNING replica (or the wake-up call returns), the model is healthy again and step 1
picks it as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.base import LatencyView, Policy, QualityPredictor
from policies.types import Decision, RouteRequest, Target
from router.view import LiveView

_COLD = ("cold", "warming")


class _Masked:
    """A RoutingView over the live view with cold/warming targets hidden, or shown at warm latency."""

    def __init__(self, view: LiveView, *, warm_cold: bool) -> None:
        self._view = view
        self._warm_cold = warm_cold
        self.latency: LatencyView = view.raw_latency if warm_cold else view.latency

    @property
    def targets(self) -> Sequence[Target]:
        return self._view.targets

    @property
    def quality(self) -> QualityPredictor:
        return self._view.quality

    def healthy(self, target_id: str) -> bool:
        state = self._view.state(target_id)
        return state == "healthy" or (self._warm_cold and state in _COLD)


class ColdAware:
    """A policy wrapper for views with scale-from-zero targets (see the module docstring)."""

    def __init__(self, inner: Policy, cold_capable: Sequence[str]) -> None:
        self._inner = inner
        self._capable = tuple(cold_capable)

    def __getattr__(self, name: str) -> Any:  # name, accept (cascade), config, ...
        if name.startswith("__") or name == "_inner":  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self._inner, name)

    def decide(self, request: RouteRequest, view: Any) -> Decision:
        if not isinstance(view, LiveView):
            return self._inner.decide(request, view)
        cold = [t for t in self._capable if view.state(t) in _COLD]
        if not cold:
            return self._inner.decide(request, view)
        warm = self._inner.decide(request, _Masked(view, warm_cold=False))
        wish = self._inner.decide(request, _Masked(view, warm_cold=True))
        woken = wish.target if wish.target in cold else None
        if woken is not None:
            view.wake(woken)
        if warm.outcome == "route":
            return warm if woken is None else warm.model_copy(update={"reason": f"{warm.reason}+waking:{woken}"})
        waiting = self._inner.decide(request, view)  # cold ones at their cold-start-inclusive latency
        if waiting.outcome == "route" and waiting.target in cold:
            return waiting.model_copy(update={"reason": f"{waiting.reason}+cold-start"})
        return warm
