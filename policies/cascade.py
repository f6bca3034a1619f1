"""`cascade`: try a cheap target first; escalate to the next one when its answer looks weak.

`decide` picks the cheapest plausible target (eligible, and meeting the latency and cost bounds when any
target does) and returns the rest of the escalation chain, cheapest first, as alternates. min_quality
is not predicted here: it is what `accept` checks on the actual answer.

The router drives it (non-streaming requests only: a streamed answer has already reached the client
before it could be judged, so streaming requests use the decision as is):

    d = policy.decide(req, view)
    while True:
        answer = call(d.target)
        if policy.accept(answer.text, answer.mean_logprob):
            break
        d = policy.escalate(d)   # Decision for the next target, or None when the chain is spent
        if d is None:
            break                # keep the last answer
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.estimates import eligible, estimate, latency_of, why_not
from policies.registry import NO_KNOB, register
from policies.types import Decision, Estimate, RouteRequest

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:'|no)t (?:help|assist|answer)|i am unable|i'?m unable|"
    r"as an ai\b|i do not know|i don'?t know)",
    re.IGNORECASE,
)


class CascadeConfig(BaseModel):
    """Cheapest first, escalating on weak answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Its knob (min_mean_logprob) judges real answers, which an offline table does not have.
    sweep_knob: ClassVar[str | None] = None
    sweep_grid: ClassVar[tuple[float, ...]] = NO_KNOB

    name: Literal["cascade"] = Field("cascade", description="Policy name (discriminator).")
    chain: tuple[str, ...] | None = Field(
        None, description="Escalation order of target ids; None = eligible targets by expected cost."
    )
    min_mean_logprob: float = Field(
        -1.5, le=0, description="Escalate when the answer's mean token log-probability is below this."
    )
    min_answer_chars: int = Field(
        8, ge=0, description="Escalate when the stripped answer is shorter than this many characters."
    )
    escalate_on_refusal: bool = Field(True, description="Escalate when the answer opens with a refusal.")
    max_escalations: int = Field(2, ge=0, description="At most this many escalations per request.")


@register(CascadeConfig)
class Cascade:
    name = "cascade"

    def __init__(self, config: CascadeConfig | None = None) -> None:
        self.config = config or CascadeConfig()

    def decide(self, request: RouteRequest, view: RoutingView) -> Decision:
        c = request.constraints
        targets, _ = eligible(request, view)
        if self.config.chain is not None:
            pos = {t: i for i, t in enumerate(self.config.chain)}
            targets = sorted((t for t in targets if t.id in pos), key=lambda t: pos[t.id])
        ests = estimate(request, view, targets)
        if not ests:
            return Decision(target=None, outcome="reject", reason="cascade:no-candidate")
        idx = range(len(ests))
        if self.config.chain is None:
            chain = sorted(idx, key=lambda i: (ests[i].cost_usd, i))
        else:
            chain = list(idx)
        # Hard bounds (latency, cost) still apply; quality is judged on the answer instead.
        hard = c.model_copy(update={"min_quality": None})
        ok = [i for i in chain if why_not(hard, 1.0, latency_of(ests[i], c), ests[i].cost_usd) is None]
        first = ok[0] if ok else chain[0]
        rest = [i for i in chain if i != first][: self.config.max_escalations]
        chosen = ests[first]
        return Decision(
            target=chosen.target,
            alternates=tuple(ests[i].target for i in rest),
            outcome="route" if ok else "best_effort",
            reason="cascade" if ok else "cascade:violates-latency-or-cost",
            predicted_quality=chosen.quality,
            predicted_latency_ms=latency_of(chosen, c),
            predicted_cost_usd=chosen.cost_usd,
            candidates=tuple(ests),
        )

    def accept(self, answer_text: str, mean_logprob: float | None = None) -> bool:
        """True when the answer looks good enough to return; False = escalate."""
        text = answer_text.strip()
        if len(text) < self.config.min_answer_chars:
            return False
        if self.config.escalate_on_refusal and _REFUSAL.match(text):
            return False
        return mean_logprob is None or mean_logprob >= self.config.min_mean_logprob

    def escalate(self, decision: Decision) -> Decision | None:
        """The decision for the next target of the chain (reason 'cascade:escalate'), or None."""
        if not decision.alternates:
            return None
        nxt = decision.alternates[0]
        est: Estimate | None = next((e for e in decision.candidates if e.target == nxt), None)
        return Decision(
            target=nxt,
            alternates=decision.alternates[1:],
            outcome="route",
            reason="cascade:escalate",
            predicted_quality=est.quality if est else None,
            predicted_latency_ms=est.e2e_ms if est else None,
            predicted_cost_usd=est.cost_usd if est else None,
            candidates=decision.candidates,
        )
