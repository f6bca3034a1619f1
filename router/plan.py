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
from policies.types import Constraints, Decision, RouteRequest, Target
from router.auth import KeyStore, Principal
from router.errors import Forbidden, NoHealthyTarget, NotFound, Unsatisfiable
from router.failures import FieldError
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
        self._check_allowed_ids(req, constraints)
        route = route_request(req, constraints, self.limits.expected_output_tokens)
        self.telemetry.prompt(span, route.prompt)
        if route.prompt_tokens > self.max_prompt:
            raise FieldError(
                f"prompt of ~{route.prompt_tokens} tokens exceeds the limit of {self.max_prompt}",
                param="messages" if endpoint == "chat" else "prompt", code="context_length_exceeded",
            )
        self._check_choices(req)
        upstream = {k: v for k, v in body.items() if k != "routing"}
        if req.model != "auto":
            tid = req.model
            target = self.by_id.get(tid)
            if target is None:
                raise NotFound(f"model '{tid[:100]}' does not exist; use 'auto' or an id from /v1/models")
            principal.check_target(tid)
            if route.prompt_tokens > target.context_window:
                raise FieldError(
                    f"prompt of ~{route.prompt_tokens} tokens exceeds the context window of '{tid}'",
                    param="messages" if endpoint == "chat" else "prompt", code="context_length_exceeded",
                )
            if not self._fits(target, req, route):
                self._refuse(req, route, [target])
            if not self.view.healthy(tid):
                raise self._unavailable([tid], f"target '{tid}' is unavailable", "unavailable")
            return Plan(endpoint, req, route, principal, [tid], "pinned", upstream, span, auto=False,
                        timeout_s=self.limits.request_timeout_s)
        route = self._restrict(req, route)
        decision = self._decide(route, span)
        allowed = route.constraints.allowed_targets
        attempts: list[str] = []
        for tid in (decision.target or "", *decision.alternates):
            if tid in self.by_id and tid not in attempts and (allowed is None or tid in allowed):
                attempts.append(tid)
        attempts = [t for t in attempts if self.view.healthy(t)][: 1 + self.limits.max_alternates]
        if not attempts:
            raise self._unavailable(allowed or [t.id for t in self.targets], "no healthy target fits this request",
                                    "unavailable")
        return Plan(endpoint, req, route, principal, attempts, decision.reason, upstream, span, auto=True,
                    timeout_s=self.limits.request_timeout_s)

    # -- request checks that depend on the targets and limits ---------------------------------------
    def _check_allowed_ids(self, req: ChatRequest | CompletionRequest, constraints: Constraints) -> None:
        asked = req.routing.allowed_targets if req.routing is not None else None
        if asked is None:
            return
        if not asked:
            raise FieldError("routing.allowed_targets: name at least one target", param="routing.allowed_targets")
        for tid in asked:
            if tid not in self.by_id:
                raise FieldError(
                    f"routing.allowed_targets: unknown target '{tid[:100]}'; ids are listed by /v1/models",
                    param="routing.allowed_targets", code="model_not_found",
                )
        if not constraints.allowed_targets:  # every id it names is barred for this key
            raise Forbidden("routing.allowed_targets: none of these targets may be used with this key")

    def _check_choices(self, req: ChatRequest | CompletionRequest) -> None:
        n_max = self.limits.max_n
        for name in ("n", "best_of"):
            value = getattr(req, name, None)
            if value is not None and value > n_max:
                raise FieldError(f"'{name}' is limited to {n_max} on this router (limits.max_n)", param=name)

    @staticmethod
    def _max_tokens_field(req: ChatRequest | CompletionRequest) -> str:
        if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
            return "max_completion_tokens"
        return "max_tokens"

    @staticmethod
    def _fits(t: Target, req: ChatRequest | CompletionRequest, route: RouteRequest) -> bool:
        """Can `t` take the request at all: prompt + max_tokens within its context, tools if it uses any."""
        need = route.prompt_tokens + (route.max_tokens or 0)
        return need <= t.context_window and (t.supports_tools or not req.uses_tools())

    def _refuse(self, req: ChatRequest | CompletionRequest, route: RouteRequest, ts: Sequence[Target]) -> None:
        """The 400 for a request none of `ts` can take (tools first: no context helps there)."""
        if req.uses_tools() and not any(t.supports_tools for t in ts):
            raise FieldError(
                "tools: no target of this request supports tool calling (enable it per model in cluster.yaml: "
                "supports_tools: true with engine_kwargs enable_auto_tool_choice and tool_call_parser)",
                param="tools", code="tools_not_supported",
            )
        field_name = self._max_tokens_field(req)
        window = max((t.context_window for t in ts), default=0)
        raise FieldError(
            f"'{field_name}' ({route.max_tokens}) plus the prompt (~{route.prompt_tokens} tokens) exceeds the "
            f"context window ({window} tokens)", param=field_name, code="context_length_exceeded",
        )

    def _restrict(self, req: ChatRequest | CompletionRequest, route: RouteRequest) -> RouteRequest:
        """`auto`: route only among targets that can take the request (context for max_tokens, tools)."""
        allowed = route.constraints.allowed_targets
        pool = [t for t in self.targets if allowed is None or t.id in allowed]
        fit = [t for t in pool if self._fits(t, req, route)]
        if not fit:
            self._refuse(req, route, pool)
        if len(fit) == len(pool):
            return route
        c = route.constraints.model_copy(update={"allowed_targets": tuple(t.id for t in fit)})
        return route.model_copy(update={"constraints": c})

    def _unavailable(self, ids: Sequence[str], message: str, reason: str) -> NoHealthyTarget:
        """503; while a model it could use is still loading, say so, with a Retry-After."""
        if any(self.view.state(t) == "starting" for t in ids):
            after = str(self.limits.starting_retry_after_s)
            return NoHealthyTarget(
                f"the router is starting: models are still loading (see /v1/models); retry in {after} s",
                code="router_starting", headers={**reason_header("starting"), "retry-after": after},
            )
        return NoHealthyTarget(message, headers=reason_header(reason))

    def _decide(self, route: RouteRequest, span: Span) -> Decision:
        allowed = route.constraints.allowed_targets
        if not any(self.view.healthy(t.id) for t in self.targets if allowed is None or t.id in allowed):
            raise self._unavailable(allowed or [t.id for t in self.targets], "no healthy target", "no-healthy-target")
        dspan = self.telemetry.decide(span)
        traced = dspan.is_recording()
        if not traced:  # nobody reads the per-candidate estimates: the policy skips building them
            route = route.model_copy(update={"explain": False})
        try:
            t0 = time.perf_counter()
            decision = self.policy.decide(route, self.view)
            self.metrics.decision((time.perf_counter() - t0) * 1000)
            if traced:
                dspan.set_attributes(decision_attributes(decision))
        finally:
            dspan.end()
        if decision.outcome == "reject" or decision.target is None:
            raise Unsatisfiable(
                f"no target satisfies the constraints: {decision.reason}",
                headers=reason_header(decision.reason),
            )
        return decision
