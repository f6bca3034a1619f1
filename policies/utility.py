"""`utility`: the target with the best predicted quality for its price, among those meeting the bounds.

With many targets, "the cheapest target whose P(ok) >= min_quality" depends on every target's
probability being calibrated at one threshold, and one threshold cannot suit prompts whose attainable
quality differs (on a trivia prompt no model clears 0.5; on an easy maths prompt five do). This rule
compares targets on one prompt with each other instead:

    utility(t) = P(ok | prompt, t) - cost_weight * (USD per 1k requests of this request on t)

1. Candidates and fit as in cheapest-fit (`estimates.eligible` / `estimate`): latency and cost bounds
   are hard, and a request's min_quality (if any) is a fit condition too.
2. Some fit -> "route" to the fitting target of highest utility; ties (within 1e-9) go to the cheaper,
   then the faster, then config order. Alternates: the other fitting targets by utility, then healthy
   api targets that do not fit. The reason is 'utility'.
3. cost_weight None: derived from the request's budget, lambda = budget_penalty / (1000 x max_cost_usd),
   i.e. a target costing the whole budget gives up `budget_penalty` of quality; without a budget,
   lambda = 0 (best predicted quality).
4. Abstention: when the predictor says the prompt is unlike its training data (`support(prompt)` below
   `abstain_below`, see `policies.predictors`), its per-prompt predictions are not trusted and the
   request goes to the strongest fitting target by prior quality (reason 'utility:abstain').
5. Nothing fits -> exactly as cheapest-fit (api fallback, then `on_unsatisfiable`).

cost_weight is in quality points (P(ok) on a 0..1 scale) per USD per 1k requests: 0.1 means paying one
more dollar per thousand requests is worth 0.1 more probability of a good answer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.cheapest_fit import _decision, unsatisfied
from policies.estimates import Candidate, eligible, estimate, latency_of, target_table
from policies.registry import LOG_GRID, register
from policies.types import Decision, RouteRequest

_TIE = 1e-9


class UtilityConfig(BaseModel):
    """Maximise predicted quality minus a cost weight times the expected cost, under hard bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sweep_knob: ClassVar[str | None] = "cost_weight"
    sweep_grid: ClassVar[tuple[float, ...]] = LOG_GRID

    name: Literal["utility"] = Field("utility", description="Policy name (discriminator).")
    cost_weight: float | None = Field(
        0.3,
        ge=0,
        description="lambda: quality (P(ok), 0..1) traded per USD per 1k requests. 0 = best predicted "
        "quality regardless of price. None = derived per request from max_cost_usd (budget_penalty). 0.3: "
        "where 5-fold CV on llmrouter-dc's train part matched its best model at ~45% of the cost; "
        "prices differ between deployments, so calibrate it for yours.",
    )
    budget_penalty: float = Field(
        0.1,
        ge=0,
        description="With cost_weight None and a request budget: the quality a target costing the whole "
        "budget gives up (lambda = budget_penalty / (1000 x max_cost_usd)).",
    )
    abstain_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Route to the strongest fitting target (by prior quality) when the predictor's "
        "support for the prompt (1 = like its training prompts, 0 = unlike any) is below this. "
        "None: never abstain (predictors still shrink unfamiliar prompts towards their prior).",
    )
    on_unsatisfiable: Literal["reject", "best_effort"] = Field(
        "reject",
        description="When nothing fits and no API fallback is possible: reject, or send the request to "
        "the target missing the constraints by the least.",
    )
    max_alternates: int | None = Field(
        None, ge=0,
        description="Cap on the ranked alternates returned (None: all eligible). How many the router "
        "actually tries is limits.max_alternates, the one setting for that.",
    )


@register(UtilityConfig)
class Utility:
    name = "utility"

    def __init__(self, config: UtilityConfig | None = None) -> None:
        self.config = config or UtilityConfig()

    def _weight(self, request: RouteRequest) -> float:
        lam = self.config.cost_weight
        if lam is not None:
            return lam
        budget = request.constraints.max_cost_usd
        if budget:
            return self.config.budget_penalty / (1000.0 * budget)
        return 0.0

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        cfg = self.config
        c = request.constraints
        targets, excluded = eligible(request, view)
        ests = estimate(request, view, targets)
        table = target_table(view.targets)
        kinds, order = table.kind, table.index

        def rank(e: Candidate) -> tuple[float, float, int]:
            return (e.cost_usd, latency_of(e, c), order[e.target])

        fitting = [e for e in ests if e.fits]
        if not fitting:
            return unsatisfied(ests, kinds, excluded, request, rank, cfg.on_unsatisfiable, cfg.max_alternates)
        reason = "utility"
        if cfg.abstain_below is not None and _support(view, request.prompt) < cfg.abstain_below:
            prior = _prior(view)
            qual = {t.id: prior.get(t.id, t.quality_prior) for t in targets}
            reason = "utility:abstain"
            lam = 0.0
        else:
            qual = {e.target: e.quality for e in fitting}
            lam = 1000.0 * self._weight(request)
        # Round so that float noise cannot split a tie: equal utilities then fall to price and speed.
        fitting.sort(key=lambda e: (-round((qual[e.target] - lam * e.cost_usd) / _TIE), *rank(e)))
        chosen = fitting[0]
        api_spare = [e.target for e in ests if not e.fits and kinds[e.target] == "api"]
        alts = [e.target for e in fitting[1:]] + api_spare
        return _decision("route", reason, chosen, alts[: cfg.max_alternates], ests, request)


def _support(view: RoutingView, prompt: str) -> float:
    """The predictor's support for the prompt in [0, 1]; 1 when it cannot tell (a static prior)."""
    fn = getattr(view.quality, "support", None)
    return 1.0 if fn is None else float(fn(prompt))


def _prior(view: RoutingView) -> dict[str, float]:
    """The predictor's per-target prior quality (training means), if it has one."""
    p = getattr(view.quality, "prior", None)
    return dict(p) if p else {}
