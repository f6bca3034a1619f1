"""Small builders shared by the policy tests."""

from __future__ import annotations

from policies.base import StaticView
from policies.latency import LatencyEstimator
from policies.predictors import PriorPredictor
from policies.types import Constraints, LatencyPrior, RouteRequest, Target


def target(tid: str, kind: str = "local", price: float = 0.0, quality: float = 0.5, **kw) -> Target:
    return Target(
        id=tid,
        kind=kind,  # type: ignore[arg-type]
        input_price_per_mtok=price,
        output_price_per_mtok=2 * price,
        quality_prior=quality,
        **kw,
    )


TARGETS = [
    target("small", price=0.01, quality=0.4, latency=LatencyPrior(ttft_ms=50, tpot_ms=10)),
    target("mid", price=0.1, quality=0.7, latency=LatencyPrior(ttft_ms=100, tpot_ms=20)),
    target("gpt", kind="api", price=2.0, quality=0.9, latency=LatencyPrior(ttft_ms=300, tpot_ms=15)),
]


def view(targets=TARGETS, health=None) -> StaticView:
    return StaticView(targets, LatencyEstimator(targets), PriorPredictor(), health)


def req(prompt: str = "hello", tokens: int = 100, out: int = 64, **constraints) -> RouteRequest:
    return RouteRequest(
        prompt=prompt,
        prompt_tokens=tokens,
        expected_output_tokens=out,
        constraints=Constraints(**constraints),
    )
