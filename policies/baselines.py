"""Baseline policies to compare cheapest-fit against (offline replay, simulator, or serving).

All of them route only among eligible targets (allowed, healthy, context fits, api only with
allow_fallback) and ignore quality/latency/cost bounds except where their rule uses them; their outcome
is "route" when the chosen target also meets the constraints, else "best_effort", so a "route" never
hides a violation. No eligible target -> "reject".
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.estimates import Candidate, eligible, estimate, explained, latency_of
from policies.registry import NO_KNOB, UNIT_GRID, register
from policies.types import Decision, RouteRequest

_CFG = ConfigDict(frozen=True, extra="forbid")


def _pick(reason: str, request: RouteRequest, ests: list[Candidate], order: list[int]) -> Decision:
    """Decision for ests[order[0]] with the rest of `order` as alternates."""
    if not order:
        return Decision(
            target=None, outcome="reject", reason=f"{reason}:no-candidate", candidates=explained(request, ests)
        )
    chosen = ests[order[0]]
    c = request.constraints
    return Decision(
        target=chosen.target,
        alternates=tuple(ests[i].target for i in order[1:]),
        outcome="route" if chosen.fits else "best_effort",
        reason=reason if chosen.fits else f"{reason}:violates-{chosen.why_not}",
        predicted_quality=chosen.quality,
        predicted_latency_ms=latency_of(chosen, c),
        predicted_cost_usd=chosen.cost_usd,
        candidates=explained(request, ests),
    )


class AlwaysConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB
    name: Literal["always"] = Field("always", description="Policy name (discriminator).")
    target: str = Field(..., min_length=1, description="The one target id every request goes to.")


@register(AlwaysConfig)
class Always:
    name = "always"

    def __init__(self, config: AlwaysConfig) -> None:
        self.config = config

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        targets, _ = eligible(request, view)
        ests = estimate(request, view, [t for t in targets if t.id == self.config.target])
        return _pick("always", request, ests, list(range(len(ests))))


class AlwaysCheapestConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB
    name: Literal["always-cheapest"] = Field("always-cheapest", description="Policy name (discriminator).")


@register(AlwaysCheapestConfig)
class AlwaysCheapest:
    """The cheapest eligible target, quality ignored (the cost floor of every comparison)."""

    name = "always-cheapest"

    def __init__(self, config: AlwaysCheapestConfig | None = None) -> None:
        self.config = config or AlwaysCheapestConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        targets, _ = eligible(request, view)
        ests = estimate(request, view, targets)
        order = sorted(range(len(ests)), key=lambda i: (ests[i].cost_usd, i))
        return _pick("always-cheapest", request, ests, order)


class AlwaysStrongestConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB
    name: Literal["always-strongest"] = Field("always-strongest", description="Policy name (discriminator).")


@register(AlwaysStrongestConfig)
class AlwaysStrongest:
    """The eligible target with the highest predicted quality (the quality ceiling)."""

    name = "always-strongest"

    def __init__(self, config: AlwaysStrongestConfig | None = None) -> None:
        self.config = config or AlwaysStrongestConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        targets, _ = eligible(request, view)
        ests = estimate(request, view, targets)
        order = sorted(range(len(ests)), key=lambda i: (-ests[i].quality, ests[i].cost_usd, i))
        return _pick("always-strongest", request, ests, order)


class RandomConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB
    name: Literal["random"] = Field("random", description="Policy name (discriminator).")
    seed: int = Field(0, description="Seed hashed with the prompt: same seed + prompt = same target.")


@register(RandomConfig)
class RandomPolicy:
    name = "random"

    def __init__(self, config: RandomConfig | None = None) -> None:
        self.config = config or RandomConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        targets, _ = eligible(request, view)
        ests = estimate(request, view, targets)
        if not ests:
            return _pick("random", request, ests, [])
        # blake2b, not hash(): Python salts str hashes per process, and replays must agree.
        h = hashlib.blake2b(f"{self.config.seed}\x00{request.prompt}".encode(), digest_size=8).digest()
        start = int.from_bytes(h, "big") % len(ests)
        return _pick("random", request, ests, [(start + i) % len(ests) for i in range(len(ests))])


class RoundRobinConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB
    name: Literal["round-robin"] = Field("round-robin", description="Policy name (discriminator).")


@register(RoundRobinConfig)
class RoundRobin:
    """Cycles through the eligible targets; the counter is the only state (reset with `reset`)."""

    name = "round-robin"

    def __init__(self, config: RoundRobinConfig | None = None) -> None:
        self.config = config or RoundRobinConfig()
        self._n = 0

    def reset(self) -> None:
        self._n = 0

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        targets, _ = eligible(request, view)
        ests = estimate(request, view, targets)
        if not ests:
            return _pick("round-robin", request, ests, [])
        start = self._n % len(ests)
        self._n += 1
        return _pick("round-robin", request, ests, [(start + i) % len(ests) for i in range(len(ests))])


class QualityThresholdConfig(BaseModel):
    model_config = _CFG
    sweep_knob: ClassVar[str | None] = "threshold"
    sweep_grid: ClassVar[tuple[float, ...]] = UNIT_GRID
    name: Literal["quality-threshold"] = Field(
        "quality-threshold", description="Policy name (discriminator)."
    )
    strong: str = Field(..., min_length=1, description="Target id of the strong (expensive) model.")
    weak: str = Field(..., min_length=1, description="Target id of the weak (cheap) model.")
    threshold: float = Field(
        0.5, ge=0, le=1, description="Route to strong when the score falls below this (RouteLLM's alpha)."
    )
    score: Literal["weak-quality", "win-rate"] = Field(
        "weak-quality",
        description="weak-quality: score = P(weak acceptable). win-rate: score = 1 - P(strong wins) with "
        "P(strong wins) = max(0, P(strong ok) - P(weak ok)).",
    )


@register(QualityThresholdConfig)
class QualityThreshold:
    """RouteLLM-style binary router between one strong and one weak target."""

    name = "quality-threshold"

    def __init__(self, config: QualityThresholdConfig) -> None:
        self.config = config

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        cfg = self.config
        targets, _ = eligible(request, view)
        pair = [t for t in targets if t.id in (cfg.strong, cfg.weak)]
        ests = estimate(request, view, pair)
        by_id = {e.target: i for i, e in enumerate(ests)}
        if cfg.weak in by_id:
            q_weak = ests[by_id[cfg.weak]].quality
            q_strong = ests[by_id[cfg.strong]].quality if cfg.strong in by_id else q_weak
        else:
            q_weak = q_strong = 0.0
        score = q_weak if cfg.score == "weak-quality" else 1.0 - max(0.0, q_strong - q_weak)
        first, second = (cfg.strong, cfg.weak) if score < cfg.threshold else (cfg.weak, cfg.strong)
        order = [by_id[t] for t in (first, second) if t in by_id]
        reason = "quality-threshold:" + ("strong" if first == cfg.strong else "weak")
        return _pick(reason, request, ests, order)
