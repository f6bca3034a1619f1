"""The small protocols the router relies on, one main method each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from policies.types import Decision, RouteRequest, Target


@runtime_checkable
class QualityPredictor(Protocol):
    """Scores how likely each target is to answer a prompt acceptably."""

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        """Return {target_id: P(answer acceptable)} in [0, 1] for every target given."""
        ...


class LatencyView(Protocol):
    """Live per-target latency state, fed by the router (observations) and read by policies."""

    def predict(self, target: Target, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """Return (ttft_ms, e2e_ms) a new request would see now, at the configured quantile."""
        ...


class RoutingView(Protocol):
    """What a policy sees of the cluster at decision time."""

    @property
    def targets(self) -> Sequence[Target]:
        """All targets in config order (local first, then providers in fallback order)."""
        ...

    @property
    def latency(self) -> LatencyView: ...

    @property
    def quality(self) -> QualityPredictor: ...

    def healthy(self, target_id: str) -> bool:
        """False while the target is down or its circuit breaker is open."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Chooses the target for one request. Must not block and must not do I/O."""

    name: str

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision: ...


@runtime_checkable
class EscalatingPolicy(Policy, Protocol):
    """A cascade policy: a Policy that also judges the answer of its chosen target. The router calls
    `accept` on a non-streamed answer and, while it says no, the decision's next alternate."""

    def accept(self, answer_text: str, mean_logprob: float | None = None) -> bool:
        """True when the answer looks good enough to return; False = escalate."""
        ...


class ViewParts:
    """The parts every RoutingView holds: its targets, latency view and quality predictor (a view
    class sets `_targets`, `_latency`, `_quality` and adds `healthy`)."""

    _targets: tuple[Target, ...]
    _latency: LatencyView
    _quality: QualityPredictor

    @property
    def targets(self) -> Sequence[Target]:
        return self._targets

    @property
    def latency(self) -> LatencyView:
        return self._latency

    @property
    def quality(self) -> QualityPredictor:
        return self._quality


class StaticView(ViewParts):
    """A RoutingView over fixed parts: for tests, offline replay and the simulator."""

    def __init__(
        self,
        targets: Sequence[Target],
        latency: LatencyView,
        quality: QualityPredictor,
        health: Mapping[str, bool] | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._latency = latency
        self._quality = quality
        self._health = dict(health or {})

    def healthy(self, target_id: str) -> bool:
        return self._health.get(target_id, True)

    def set_health(self, target_id: str, healthy: bool) -> None:
        self._health[target_id] = healthy
