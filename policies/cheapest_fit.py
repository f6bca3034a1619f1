"""`cheapest-fit`, the product policy: the cheapest target predicted to meet every constraint.

1. Candidates: allowed, healthy, context window fits prompt + output; api targets only with
   allow_fallback (see `estimates.eligible`).
2. Fit: predicted quality >= min_quality, predicted latency (ttft or e2e, as asked) <= max_latency_ms,
   expected cost <= max_cost_usd.
3. Some fit -> outcome "route" to the cheapest (ties: lower latency, then config order); alternates are
   the other fitting targets in that order, then healthy api targets that do not fit (if fallback is
   allowed) so that a failed call still has somewhere to go.
4. None fits -> with allow_fallback and a healthy api target: outcome "fallback" to the first one in
   config order, reason 'no-local-fits:<constraints the locals missed>'. Otherwise `on_unsatisfiable`:
   "reject" (no target) or "best_effort" (the target missing the constraints by the least).
A "route" decision therefore always satisfies the constraints; the others say so in their outcome.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.estimates import eligible, estimate, latency_of, violation
from policies.registry import register
from policies.types import Constraints, Decision, Estimate, RouteRequest


class CheapestFitConfig(BaseModel):
    """Route to the cheapest target predicted to meet the request's constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["cheapest-fit"] = Field("cheapest-fit", description="Policy name (discriminator).")
    on_unsatisfiable: Literal["reject", "best_effort"] = Field(
        "reject",
        description="When nothing fits and no API fallback is possible: reject the request, or send it "
        "to the target that misses the constraints by the least.",
    )
    max_alternates: int = Field(3, ge=0, description="How many alternates to return for retries.")


def _decision(
    outcome: str, reason: str, chosen: Estimate | None, alts: list[str], ests: list[Estimate], c: Constraints
) -> Decision:
    return Decision(
        target=chosen.target if chosen else None,
        alternates=tuple(alts),
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        predicted_quality=chosen.quality if chosen else None,
        predicted_latency_ms=latency_of(chosen, c) if chosen else None,
        predicted_cost_usd=chosen.cost_usd if chosen else None,
        candidates=tuple(ests),
    )


@register(CheapestFitConfig)
class CheapestFit:
    name = "cheapest-fit"

    def __init__(self, config: CheapestFitConfig | None = None) -> None:
        self.config = config or CheapestFitConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        c = request.constraints
        targets, excluded = eligible(request, view)
        ests = estimate(request, view, targets)
        kinds = {t.id: t.kind for t in targets}
        order = {t.id: i for i, t in enumerate(targets)}
        n_alt = self.config.max_alternates

        def rank(e: Estimate) -> tuple[float, float, int]:
            return (e.cost_usd, latency_of(e, c), order[e.target])

        fitting = sorted((e for e in ests if e.fits), key=rank)
        api_spare = [e.target for e in ests if not e.fits and kinds[e.target] == "api"]
        if fitting:
            chosen = fitting[0]
            alts = [e.target for e in fitting[1:]] + api_spare
            return _decision("route", "cheapest-fit", chosen, alts[:n_alt], ests, c)

        why = _why_locals_fail(ests, kinds, excluded)
        api = [e for e in ests if kinds[e.target] == "api"]
        if api:  # eligible api targets exist only when fallback is allowed
            return _decision(
                "fallback", f"no-local-fits:{why}", api[0], [e.target for e in api[1:]][:n_alt], ests, c
            )
        if self.config.on_unsatisfiable == "best_effort" and ests:
            by_miss = sorted(ests, key=lambda e: (violation(e, c), *rank(e)))
            alts = [e.target for e in by_miss[1:]][:n_alt]
            return _decision("best_effort", f"best-effort:{why}", by_miss[0], alts, ests, c)
        return _decision("reject", f"unsatisfiable:{why}", None, [], ests, c)


def _why_locals_fail(ests: list[Estimate], kinds: dict[str, str], excluded: list[str]) -> str:
    """Constraints the local candidates missed, e.g. 'min_quality+max_latency_ms', or why none qualified."""
    misses = sorted({e.why_not for e in ests if kinds[e.target] == "local" and e.why_not})
    if misses:
        return "+".join(misses)
    return "+".join(sorted(set(excluded) - {"no-fallback"})) or "no-candidate"

