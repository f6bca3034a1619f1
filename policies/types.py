"""Values the routing policies read and return.

Everything here is a frozen pydantic model: serialisable across Ray handles, hashable where it matters,
and free of I/O. The router builds these from cluster.yaml and from each request; `policies/` never
imports Ray.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class LatencyPrior(BaseModel):
    """What a target's latency looks like before any request has been observed (cold start)."""

    model_config = _FROZEN

    ttft_ms: float = Field(200.0, gt=0, description="Expected time to first token at low load, in ms.")
    tpot_ms: float = Field(20.0, gt=0, description="Expected time per output token at low load, in ms.")
    max_concurrency: int = Field(
        8, ge=1, description="Requests one replica serves at once before new ones queue."
    )


class Target(BaseModel):
    """A model the router can send a request to: a local vLLM deployment or a proprietary API."""

    model_config = _FROZEN

    id: str = Field(..., min_length=1, description="Unique target id; clients pin a request with it.")
    kind: Literal["local", "api"] = Field(..., description="local = vLLM deployment, api = provider.")
    input_price_per_mtok: float = Field(0.0, ge=0, description="USD per 1M input tokens.")
    output_price_per_mtok: float = Field(0.0, ge=0, description="USD per 1M output tokens.")
    context_window: int = Field(4096, ge=16, description="Max prompt + output tokens the model takes.")
    quality_prior: float = Field(
        0.5, ge=0, le=1, description="P(answer acceptable) when no learned predictor covers the prompt."
    )
    latency: LatencyPrior = Field(default_factory=LatencyPrior, description="Cold-start latency prior.")
    replicas: int = Field(1, ge=1, description="Replica count at start (live view may update it).")
    tags: tuple[str, ...] = Field((), description="Free labels, e.g. 'code', 'math'.")
    supports_tools: bool = Field(
        False, description="Answers requests with `tools` (tool calling); others never get such requests."
    )

    def expected_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one request: input tokens x input price + output tokens x output price."""
        return (
            input_tokens * self.input_price_per_mtok + output_tokens * self.output_price_per_mtok
        ) / 1e6


class Constraints(BaseModel):
    """What the caller asks of the answer. None = no bound."""

    model_config = _FROZEN

    max_latency_ms: float | None = Field(None, gt=0, description="Latency bound in ms.")
    latency_metric: Literal["ttft", "e2e"] = Field(
        "e2e", description="Which latency the bound applies to: time to first token or end to end."
    )
    min_quality: float | None = Field(None, ge=0, le=1, description="Minimum P(answer acceptable).")
    max_cost_usd: float | None = Field(None, ge=0, description="Maximum expected cost of the request.")
    allow_fallback: bool = Field(True, description="May the request go to a proprietary API target.")
    allowed_targets: tuple[str, ...] | None = Field(
        None, description="Restrict routing to these target ids (None = all)."
    )


class RouteRequest(BaseModel):
    """The part of an incoming request a policy needs (no Starlette objects, no raw body)."""

    model_config = _FROZEN

    prompt: str = Field(..., description="Text the quality predictor scores (last user turn or whole).")
    prompt_tokens: int = Field(..., ge=0, description="Estimated input tokens.")
    max_tokens: int | None = Field(None, ge=1, description="Caller's max_tokens, if given.")
    expected_output_tokens: int = Field(
        256, ge=1, description="Output length used for cost/latency when max_tokens is unknown."
    )
    constraints: Constraints = Field(default_factory=Constraints, description="Caller's constraints.")
    explain: bool = Field(
        True,
        description="Fill Decision.candidates with every candidate's Estimate (the trace span reads "
        "them). False: the same choice, target, alternates, reason and predictions, without the "
        "per-candidate list; the router asks for it only when the decision is traced.",
    )

    @property
    def output_tokens(self) -> int:
        """Output length the policy plans with (bounded by max_tokens)."""
        if self.max_tokens is None:
            return self.expected_output_tokens
        return min(self.max_tokens, self.expected_output_tokens)


Outcome = Literal["route", "fallback", "best_effort", "reject"]


class Estimate(BaseModel):
    """Predicted values for one candidate target."""

    model_config = _FROZEN

    target: str
    quality: float
    ttft_ms: float
    e2e_ms: float
    cost_usd: float
    fits: bool = Field(description="Satisfies every constraint of the request.")
    why_not: str | None = Field(None, description="First constraint it fails, if any.")


class Decision(BaseModel):
    """A policy's answer: where to send the request, what else to try, and why."""

    model_config = _FROZEN

    target: str | None = Field(..., description="Chosen target id; None only when outcome=reject.")
    alternates: tuple[str, ...] = Field((), description="Ranked targets to try if the chosen one fails.")
    outcome: Outcome = Field("route", description="route | fallback | best_effort | reject.")
    reason: str = Field(..., description="Short machine-readable reason, e.g. 'cheapest-fit'.")
    predicted_quality: float | None = None
    predicted_latency_ms: float | None = None
    predicted_cost_usd: float | None = None
    candidates: tuple[Estimate, ...] = Field((), description="Per-target estimates considered.")

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        if self.outcome == "reject" and self.target is not None:
            raise ValueError("a rejected decision has no target")
        if self.outcome != "reject" and self.target is None:
            raise ValueError("a non-rejected decision needs a target")
        if self.target is not None and self.target in self.alternates:
            raise ValueError("alternates must not repeat the chosen target")
        return self
