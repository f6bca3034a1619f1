"""`cascade`: try a cheap target first; escalate to the next one when its answer looks weak.

`decide` picks the cheapest plausible target (eligible, and meeting the latency and cost bounds when any
target does) and returns the rest of the escalation chain, cheapest first, as alternates. min_quality
is not predicted here: it is what `accept` checks on the actual answer.

The router drives it (non-streaming requests only: a streamed answer has already reached the client
before it could be judged, so streaming requests use the decision as is): it calls `d.target`, and
while `policy.accept(answer_text, mean_logprob)` says no and `d.alternates` has a next target that still
fits the latency bound, calls that one, keeping the cheaper answer if escalation fails. The chain is the
decision's `alternates`; there is no second method to walk it.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.base import RoutingView
from policies.estimates import eligible, estimate, explained, latency_of, why_not
from policies.registry import NO_KNOB, register
from policies.types import Decision, RouteRequest

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
        # Hard bounds (latency, cost) still apply; quality is judged on the answer instead (a quality
        # of 1.0 meets any min_quality, so only the other bounds can fail).
        ok = [i for i in chain if why_not(c, 1.0, latency_of(ests[i], c), ests[i].cost_usd) is None]
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
            candidates=explained(request, ests),
        )

    def accept(self, answer_text: str, mean_logprob: float | None = None) -> bool:
        """True when the answer looks good enough to return; False = escalate."""
        text = answer_text.strip()
        if len(text) < self.config.min_answer_chars:
            return False
        if self.config.escalate_on_refusal and _REFUSAL.match(text):
            return False
        return mean_logprob is None or mean_logprob >= self.config.min_mean_logprob
