"""`cheapest-fit`, the product policy: the cheapest target predicted to meet every constraint.

1. Candidates: allowed, healthy, context window fits prompt + output; api targets only with
   allow_fallback (see `estimates.eligible`).
2. Fit: predicted quality >= min_quality (the request's, else the config's), predicted latency (ttft
   or e2e, as asked) <= max_latency_ms, expected cost <= max_cost_usd.
3. Some fit -> outcome "route" to the cheapest (ties: lower latency, then config order); alternates are
   the other fitting targets in that order, then healthy api targets that do not fit (if fallback is
   allowed) so that a failed call still has somewhere to go.
4. None fits -> with allow_fallback and a healthy api target: outcome "fallback" to the first one in
   config order, reason 'no-local-fits:<constraints the locals missed>' (with best_effort: only if
   it misses the constraints by no more than the best local). Otherwise `on_unsatisfiable`: "reject"
   (no target) or "best_effort" (the target missing the constraints by the least).
5. Requests without a latency bound avoid loaded targets: when the cheapest fitting target's load
   (in flight / slots) reaches 1 - `unbounded_reserve`, the cheapest fitting target below that takes
   the request (reason 'cheapest-fit:spill'), so unbounded work does not queue ahead of bounded work.
A "route" decision therefore always satisfies the constraints; the others say so in their outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.estimates import Candidate, eligible, estimate, explained, latency_of, target_table, violation
from policies.registry import UNIT_GRID, register
from policies.types import Decision, RouteRequest


class CheapestFitConfig(BaseModel):
    """Route to the cheapest target predicted to meet the request's constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sweep_knob: ClassVar[str | None] = "min_quality"
    sweep_grid: ClassVar[tuple[float, ...]] = UNIT_GRID

    name: Literal["cheapest-fit"] = Field("cheapest-fit", description="Policy name (discriminator).")
    min_quality: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quality bound for requests that set none (a request's own min_quality wins). "
        "None: such requests have no quality bound and go to the cheapest target meeting the others.",
    )
    on_unsatisfiable: Literal["reject", "best_effort"] = Field(
        "reject",
        description="When nothing fits and no API fallback is possible: reject the request, or send it "
        "to the target that misses the constraints by the least.",
    )
    max_alternates: int | None = Field(
        None, ge=0,
        description="Cap on the ranked alternates returned (None: all eligible). How many the router "
        "actually tries is limits.max_alternates, the one setting for that.",
    )
    unbounded_reserve: float | None = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of each target's slots kept for latency-bounded requests. A request without a "
        "latency bound whose cheapest fitting target is loaded (in flight / slots) at or above 1 - this "
        "goes to the cheapest fitting target below it, if any, instead of queueing ahead of bounded "
        "requests. None: always the cheapest (load is ignored for unbounded requests).",
    )


def _decision(
    outcome: str, reason: str, chosen: Candidate | None, alts: list[str], ests: list[Candidate],
    request: RouteRequest,
) -> Decision:
    c = request.constraints
    return Decision(
        target=chosen.target if chosen else None,
        alternates=tuple(alts),
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        predicted_quality=chosen.quality if chosen else None,
        predicted_latency_ms=latency_of(chosen, c) if chosen else None,
        predicted_cost_usd=chosen.cost_usd if chosen else None,
        candidates=explained(request, ests),
    )


@register(CheapestFitConfig)
class CheapestFit:
    name = "cheapest-fit"

    def __init__(self, config: CheapestFitConfig | None = None) -> None:
        self.config = config or CheapestFitConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        c = request.constraints
        if c.min_quality is None and self.config.min_quality is not None:
            c = c.model_copy(update={"min_quality": self.config.min_quality})
            request = request.model_copy(update={"constraints": c})
        targets, excluded = eligible(request, view)
        ests = estimate(request, view, targets)
        table = target_table(view.targets)
        kinds, order = table.kind, table.index
        n_alt = self.config.max_alternates

        def rank(e: Candidate) -> tuple[float, float, int]:
            return (e.cost_usd, latency_of(e, c), order[e.target])

        fitting = sorted((e for e in ests if e.fits), key=rank)
        api_spare = [e.target for e in ests if not e.fits and kinds[e.target] == "api"]
        if fitting:
            chosen, reason = fitting[0], "cheapest-fit"
            reserve = self.config.unbounded_reserve
            if c.max_latency_ms is None and reserve is not None and len(fitting) > 1:
                load = getattr(view.latency, "load", None)  # optional: a static LatencyView has none
                if load is not None and load(chosen.target) >= 1.0 - reserve:
                    roomy = next((e for e in fitting[1:] if load(e.target) < 1.0 - reserve), None)
                    if roomy is not None:
                        fitting.remove(roomy)
                        fitting.insert(0, roomy)
                        chosen, reason = roomy, "cheapest-fit:spill"
            alts = [e.target for e in fitting[1:]] + api_spare
            return _decision("route", reason, chosen, alts[:n_alt], ests, request)

        return unsatisfied(ests, kinds, excluded, request, rank, self.config.on_unsatisfiable, n_alt)


def unsatisfied(
    ests: list[Candidate],
    kinds: Mapping[str, str],
    excluded: list[str],
    request: RouteRequest,
    rank: Callable[[Candidate], tuple[float, float, int]],
    on_unsatisfiable: str,
    n_alt: int | None,
) -> Decision:
    """The decision when no candidate fits: api fallback, best effort or reject (steps 4 of the doc)."""
    c = request.constraints
    why = _why_locals_fail(ests, kinds, excluded)
    api = [e for e in ests if kinds[e.target] == "api"]
    best_effort = on_unsatisfiable == "best_effort"
    by_miss = sorted(ests, key=lambda e: (violation(e, c), *rank(e))) if best_effort else []
    # The api fallback is for what the locals cannot do (quality, a down local). When it misses the
    # constraints by more than a local does (a latency bound that a saturated local misses and a
    # slower provider misses further), best effort on that local serves the request better and
    # keeps the provider's capacity for the requests it can serve.
    if api and not (by_miss and kinds[by_miss[0].target] == "local"
                    and violation(by_miss[0], c) < violation(api[0], c)):
        return _decision(
            "fallback", f"no-local-fits:{why}", api[0], [e.target for e in api[1:]][:n_alt], ests, request
        )
    if by_miss:
        alts = [e.target for e in by_miss[1:]][:n_alt]
        return _decision("best_effort", f"best-effort:{why}", by_miss[0], alts, ests, request)
    return _decision("reject", f"unsatisfiable:{why}", None, [], ests, request)


def _why_locals_fail(ests: list[Candidate], kinds: Mapping[str, str], excluded: list[str]) -> str:
    """Constraints the local candidates missed, e.g. 'min_quality+max_latency_ms', or why none qualified."""
    misses = sorted({e.why_not for e in ests if kinds[e.target] == "local" and e.why_not})
    if misses:
        return "+".join(misses)
    return "+".join(sorted(set(excluded) - {"no-fallback"})) or "no-candidate"
