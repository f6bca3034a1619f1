"""Planning a request: parse, authenticate, merge constraints, pin or ask the policy.

The result is a `Plan`: the targets to try in order (chosen first, then bounded healthy alternates),
the reason, and the body to send upstream (without our `routing` extension).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from policies.base import Policy
from policies.types import Decision, RouteRequest, Target
from router.auth import KeyStore, Principal
from router.errors import BadRequest, NoHealthyTarget, NotFound, Unsatisfiable
from router.limits import LimitsConfig
from router.metrics import Metrics
from router.parse import (
    ChatRequest,
    CompletionRequest,
    Endpoint,
    merge_constraints,
    parse_body,
    route_request,
    routing_from_headers,
)
from router.telemetry import Telemetry, decision_attributes
from router.view import LiveView


@dataclass
class Plan:
    endpoint: Endpoint
    req: ChatRequest | CompletionRequest
    route: RouteRequest
    principal: Principal
    attempts: list[str]
    reason: str
    body: dict[str, Any]
    span: Span
    auto: bool
    t0: float = field(default_factory=time.perf_counter)
    timeout_s: float = 120.0  # the request's total deadline, shared by all its attempts

    @property
    def deadline(self) -> float:
        """perf_counter() time by which the request must have its answer (first token for streams)."""
        return self.t0 + self.timeout_s


def reason_header(reason: str) -> dict[str, str]:
    return {"x-router-target": "none", "x-router-reason": reason}


class Planner:
    """Everything before the first upstream call; pure bookkeeping, no I/O."""

    def __init__(
        self,
        targets: Sequence[Target],
        policy: Policy,
        view: LiveView,
        auth: KeyStore,
        limits: LimitsConfig,
        telemetry: Telemetry,
        metrics: Metrics,
    ) -> None:
        self.targets = tuple(targets)
        self.by_id = {t.id: t for t in self.targets}
        self.policy, self.view, self.auth, self.limits = policy, view, auth, limits
        self.telemetry, self.metrics = telemetry, metrics
        self.max_prompt = limits.max_prompt_tokens or max(t.context_window for t in self.targets)

    def plan(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint, span: Span
    ) -> Plan:
        principal = self.auth.authenticate(headers.get("authorization"))
        req = parse_body(body, endpoint)
        self.auth.check_budget(principal)
        constraints = merge_constraints(
            principal.constraints, routing_from_headers(headers), req.routing,
            key_allowed=principal.allowed_targets,
        )
        route = route_request(req, constraints, self.limits.expected_output_tokens)
        self.telemetry.prompt(span, route.prompt)
        if route.prompt_tokens > self.max_prompt:
            raise BadRequest(
                f"prompt of ~{route.prompt_tokens} tokens exceeds the limit of {self.max_prompt}",
                code="context_length_exceeded",
            )
        upstream = {k: v for k, v in body.items() if k != "routing"}
        if req.model != "auto":
            tid = req.model
            target = self.by_id.get(tid)
            if target is None:
                raise NotFound(f"model '{tid[:100]}' does not exist; use 'auto' or an id from /v1/models")
            principal.check_target(tid)
            if route.prompt_tokens > target.context_window:
                raise BadRequest(
                    f"prompt of ~{route.prompt_tokens} tokens exceeds the context window of '{tid}'",
                    code="context_length_exceeded",
                )
            if not self.view.healthy(tid):
                raise NoHealthyTarget(f"target '{tid}' is unavailable", headers=reason_header("unavailable"))
            return Plan(endpoint, req, route, principal, [tid], "pinned", upstream, span, auto=False,
                        timeout_s=self.limits.request_timeout_s)
        decision = self._decide(route, span)
        allowed = constraints.allowed_targets
        attempts: list[str] = []
        for tid in (decision.target or "", *decision.alternates):
            if tid in self.by_id and tid not in attempts and (allowed is None or tid in allowed):
                attempts.append(tid)
        attempts = [t for t in attempts if self.view.healthy(t)][: 1 + self.limits.max_alternates]
        if not attempts:
            raise NoHealthyTarget(
                "no healthy target fits this request", headers=reason_header("unavailable")
            )
        return Plan(endpoint, req, route, principal, attempts, decision.reason, upstream, span, auto=True,
                    timeout_s=self.limits.request_timeout_s)

    def _decide(self, route: RouteRequest, span: Span) -> Decision:
        allowed = route.constraints.allowed_targets
        if not any(self.view.healthy(t.id) for t in self.targets if allowed is None or t.id in allowed):
            raise NoHealthyTarget("no healthy target", headers=reason_header("no-healthy-target"))
        dspan = self.telemetry.decide(span)
        try:
            t0 = time.perf_counter()
            decision = self.policy.decide(route, self.view)
            self.metrics.decision((time.perf_counter() - t0) * 1000)
            dspan.set_attributes(decision_attributes(decision))
        finally:
            dspan.end()
        if decision.outcome == "reject" or decision.target is None:
            raise Unsatisfiable(
                f"no target satisfies the constraints: {decision.reason}",
                headers=reason_header(decision.reason),
            )
        return decision
