"""The request execution core: parse → authenticate → decide → call (with failover) → account.

No Ray and no Starlette here: the ingress hands in plain dicts and gets back a response dict (or an
async iterator of chunk dicts) plus the `x-router-*` headers. Every upstream call is one
`router.attempt.Attempt`: it reserves the call's expected cost against the key's budget, feeds the
live view (started/finished, latency on success, errors) that the policy reads on the next decision,
and charges what the call cost to the target that made it, on every way the call can end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span

from deployments.contracts import TargetClient
from policies.base import EscalatingPolicy, Policy
from policies.types import Target
from router.attempt import Attempt, Deps, Relay, first_chunk
from router.auth import AuthConfig, KeyStore
from router.budget import Budget, LocalLedger
from router.continuation import Continuer
from router.errors import BudgetExhausted, NoHealthyTarget, RouterError, UpstreamError
from router.limits import LimitsConfig
from router.metrics import Metrics, NoMetrics
from router.parse import Endpoint
from router.plan import Plan, Planner
from router.telemetry import Telemetry, record_error
from router.usage import answer_signal, split_latency, usage_of
from router.view import LiveView

logger = logging.getLogger(__name__)


class RouterService:
    """Executes OpenAI-format requests against the targets the policy picks."""

    def __init__(
        self,
        targets: Sequence[Target],
        clients: Mapping[str, TargetClient],
        policy: Policy,
        view: LiveView,
        *,
        auth: KeyStore | None = None,
        limits: LimitsConfig | None = None,
        telemetry: Telemetry | None = None,
        metrics: Metrics | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one target is needed")
        missing = [t.id for t in targets if t.id not in clients]
        if missing:
            raise ValueError(f"no client for targets {missing}")
        self.targets = tuple(targets)
        self._by_id = {t.id: t for t in self.targets}
        self.clients = dict(clients)
        self.policy = policy
        self.view = view
        self.auth = auth or KeyStore(AuthConfig())
        self.limits = limits or LimitsConfig()
        self.telemetry = telemetry or Telemetry()
        self.metrics: Metrics = metrics or NoMetrics()
        self.budget = budget or Budget(LocalLedger())
        self._accept = policy.accept if isinstance(policy, EscalatingPolicy) else None
        self._deps = Deps(view, self.telemetry, self.metrics, self.budget)
        self._continuer = Continuer(self)
        self.planner = Planner(
            self.targets, policy, view, self.auth, self.limits, self.telemetry, self.metrics
        )
        self._created = int(time.time())
        self.open_requests = 0  # request spans started and not ended (a leak shows as a count at idle)

    def set_budget(self, budget: Budget) -> None:
        """Use `budget` (the ingress replica's, over the shared ledger) from now on."""
        self.budget = self._deps.budget = budget

    # -- public API used by the handlers -----------------------------------------------------------
    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat"
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Non-streaming request: (OpenAI response dict, x-router-* headers)."""
        span = self.telemetry.server(endpoint, _model_of(body))
        self.open_requests += 1
        try:
            plan = self.planner.plan(body, headers, endpoint, span)
            resp, tid, reason, cost = await self._run(plan)
            self.metrics.request(tid, endpoint, "ok")
            return resp, self._finish_span(span, tid, reason, cost, resp.get("usage"))
        except BaseException as e:
            self._fail(span, e, endpoint)
            raise
        finally:
            span.end()
            self.open_requests -= 1

    async def chat_stream(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat"
    ) -> tuple[AsyncIterator[dict[str, Any]], dict[str, str]]:
        """Streaming request: returns once a target has produced its first chunk.

        Failures before that chunk move on to the next alternate; later ones are continued on the next
        alternate that can take the rest of the answer (router/continuation.py), else end the stream
        with an `{"error": ...}` chunk. The cost header is the estimate (the actual cost is charged at the end).
        The returned stream must be closed (`aclose()`) by whoever stops reading it; that ends the call,
        its charge and the request's span even when not one chunk was read.
        """
        span = self.telemetry.server(endpoint, _model_of(body))
        self.open_requests += 1
        try:
            plan = self.planner.plan(body, headers, endpoint, span)
            # Usage is always read upstream (accounting), but passed on only when asked (OpenAI streams).
            wants_usage = (plan.body.get("stream_options") or {}).get("include_usage") is True
            plan.body["stream"] = True
            plan.body["stream_options"] = {**(plan.body.get("stream_options") or {}), "include_usage": True}
            last: BaseException | None = None
            for i, tid in enumerate(plan.attempts):
                if i and not self._next_ok(plan, tid, last):
                    continue
                sent = {**plan.body, "model": tid}
                a = await self._open(plan, tid, i, sent, stream=True, last=last)
                if a is None:
                    break
                agen = self.clients[tid].stream(plan.endpoint, sent)
                try:
                    first = await first_chunk(a, agen)
                except Exception as e:  # a cancellation passes (first_chunk booked it)
                    last = self._failed(a, e)
                    continue
                reason = plan.reason + ("+failover" if i else "")
                estimate = a.reservation.amount if a.reservation and a.reservation.leased else (
                    self._by_id[tid].expected_cost_usd(plan.route.prompt_tokens, plan.route.output_tokens))
                stream = Relay(a, agen, first, wants_usage=wants_usage,
                               chunk_timeout_s=self.limits.request_timeout_s,
                               on_end=functools.partial(self._end_stream, plan, reason=reason),
                               resume=functools.partial(self._continuer.resume, plan),
                               tried=set(plan.attempts[: i + 1]))
                return stream, _headers(tid, reason, estimate)
            raise last or NoHealthyTarget("no healthy target left to try")
        except BaseException as e:
            self._fail(span, e, endpoint)
            span.end()
            self.open_requests -= 1
            raise

    def models(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """GET /v1/models: `auto` and each target this key may use, with prices and state."""
        principal = self.auth.authenticate(headers.get("authorization"))
        data: list[dict[str, Any]] = [
            {"id": "auto", "object": "model", "created": self._created, "owned_by": "router",
             "kind": "router"}
        ]
        for t in self.targets:
            if principal.allowed_targets is None or t.id in principal.allowed_targets:
                data.append({
                    "id": t.id, "object": "model", "created": self._created, "owned_by": "router",
                    "kind": t.kind, "input_price_per_mtok": t.input_price_per_mtok,
                    "output_price_per_mtok": t.output_price_per_mtok, "context_window": t.context_window,
                    "state": self.view.state(t.id),
                })
        return {"object": "list", "data": data}

    async def usage(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """GET /v1/usage: the calling key's own spend and budget (never another key's)."""
        return await self.budget.usage(self.auth.authenticate(headers.get("authorization")))

    def health(self) -> dict[str, Any]:
        states = {t.id: self.view.state(t.id) for t in self.targets}
        ok = any(s == "healthy" for s in states.values())
        return {"status": "ok" if ok else "degraded", "targets": states}

    # -- non-streaming execution --------------------------------------------------------------------
    async def _run(self, plan: Plan) -> tuple[dict[str, Any], str, str, float]:
        """Failover and cascade. Every call is charged to its own target; the answer's cost header is
        what the request cost in all (a cascade pays for the cheap call and the escalation)."""
        last: BaseException | None = None
        kept: tuple[dict[str, Any], str, str] | None = None  # a cascade answer we escalated from
        spent = 0.0
        for i, tid in enumerate(plan.attempts):
            if i and not self._next_ok(plan, tid, last, escalating=kept is not None):
                continue
            try:
                got = await self._call(plan, tid, i, last)
            except UpstreamError as e:
                if kept is not None:  # escalation failed: the cheap answer in hand beats an error
                    logger.warning("escalation to %s failed (%s): returning the cheaper answer", tid, e.code)
                    break
                if not e.retryable:
                    raise
                last = e
                continue
            except RouterError:
                if kept is not None:  # e.g. the escalation was refused as invalid: keep the cheap answer
                    break
                raise
            if got is None:  # the budget does not stretch to this attempt
                break
            resp, cost = got
            spent += cost
            reason = plan.reason + ("+escalated" if kept else "+failover" if i else "")
            if self._escalate(plan, resp, i):
                kept = (resp, tid, reason)
                last = None
                continue
            return resp, tid, reason, spent
        if kept is not None:
            return kept[0], kept[1], kept[2], spent
        raise last or NoHealthyTarget("no healthy target left to try")

    async def _call(
        self, plan: Plan, tid: str, i: int, last: BaseException | None
    ) -> tuple[dict[str, Any], float] | None:
        body = {**plan.body, "model": tid}
        if self._accept is not None and plan.auto and "logprobs" not in body:
            body["logprobs"] = True if plan.endpoint == "chat" else 1
        a = await self._open(plan, tid, i, body, stream=False, last=last)
        if a is None:
            return None
        try:
            async with a:
                resp = await a.call(self.clients[tid].complete(plan.endpoint, body))
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as e:  # Attempt.__aexit__ booked it and raised the error it stands for
            raise self._failed(a, e, booked=True) from None
        usage = usage_of(resp, plan.route.prompt_tokens, plan.endpoint)
        resp["model"] = tid
        ttft, tpot = split_latency(a.target, a.elapsed_ms, usage["completion_tokens"])
        return resp, a.ok(usage, ttft, tpot)

    def _escalate(self, plan: Plan, resp: dict[str, Any], i: int) -> bool:
        if self._accept is None or not plan.auto or i + 1 >= len(plan.attempts):
            return False
        text, mean_logprob = answer_signal(resp, plan.endpoint)
        if "logprobs" not in plan.body:
            for choice in resp.get("choices") or ():
                choice.pop("logprobs", None)
        return not self._accept(text, mean_logprob)

    # -- attempts -----------------------------------------------------------------------------------
    async def _open(
        self, plan: Plan, tid: str, i: int, body: Mapping[str, Any], *, stream: bool,
        last: BaseException | None,
    ) -> Attempt | None:
        """Start attempt `i` at `tid`. The first attempt's BudgetExhausted is the request's 429 (before
        any upstream call); a later one returns None: stop here with what the earlier attempts gave."""
        timeout_s, own = self._attempt_timeout(plan, tid, i, stream)
        a = Attempt(self._deps, plan, self._by_id[tid], i, stream=stream, timeout_s=timeout_s,
                    own_limit=own, body=body)
        try:
            return await a.open()
        except BudgetExhausted:
            if i == 0:
                raise
            return None

    def _failed(self, a: Attempt, e: BaseException, *, booked: bool = False) -> BaseException:
        """The error a failed attempt stands for; raises it at once if no alternate may be tried."""
        err = e if booked else a.fail(e)
        if not isinstance(err, RouterError) or not (isinstance(err, UpstreamError) and err.retryable):
            raise err
        return err

    def _end_stream(
        self, plan: Plan, relay: Relay, usage: Mapping[str, Any] | None, error: BaseException | None, *,
        reason: str,
    ) -> None:
        a = relay.attempt
        if relay.switches:  # continued mid-stream: visible in the span and metrics, not as an error
            reason += "+continued"
            plan.span.set_attributes({
                "router.stream_failover": [f"{s.from_target}->{s.to_target or '-'}@{s.after_chunks}:{s.why}"
                                           for s in relay.switches],
                "router.continued": sum(1 for s in relay.switches if s.to_target),
            })
        if error is not None:
            record_error(plan.span, error)
            self.metrics.request(a.tid, plan.endpoint, "stream_error")
        elif not relay.completed:  # a partial answer says nothing about the target's latency
            plan.span.set_attribute("router.cancelled", True)
            self.metrics.request(a.tid, plan.endpoint, "cancelled")
        else:
            self.metrics.request(a.tid, plan.endpoint, "continued" if relay.switches else "ok")
        u = usage or {"prompt_tokens": plan.route.prompt_tokens, "completion_tokens": relay.pieces}
        self._finish_span(plan.span, a.tid, reason, relay.cost, u)
        plan.span.end()
        self.open_requests -= 1

    # -- shared helpers -----------------------------------------------------------------------------
    def _next_ok(self, plan: Plan, tid: str, last: BaseException | None, escalating: bool = False) -> bool:
        """May we move on to alternate `tid`? (healthy, time left, and for escalation within the latency bound)."""
        if not self.view.healthy(tid) or plan.deadline - time.perf_counter() <= 0:
            return False
        c = plan.route.constraints
        if escalating and c.max_latency_ms is not None:
            r = plan.route
            ttft, e2e = self.view.latency.predict(self._by_id[tid], r.prompt_tokens, r.output_tokens)
            elapsed = (time.perf_counter() - plan.t0) * 1000
            if elapsed + (ttft if c.latency_metric == "ttft" else e2e) > c.max_latency_ms:
                return False
        prev = plan.attempts[plan.attempts.index(tid) - 1]
        self.metrics.fallback(prev, tid, "escalate" if escalating else "error")
        return True

    def _attempt_timeout(self, plan: Plan, tid: str, attempt: int, stream: bool) -> tuple[float, bool]:
        """(time one attempt gets, whether that is the target's own limit): a multiple of what the target
        should take for this request, within what is left of the request's deadline
        (`limits.request_timeout_s`, shared by all attempts).

        A target whose replicas died does not fail fast: Serve queues the call until a replica is back
        (a vLLM engine takes a minute to start). Bounding each attempt by its predicted latency (TTFT for
        streams, end to end for the request's own max_tokens otherwise) lets the request move to an
        alternate instead of waiting for the restart. When the deadline is what bounds the wait, a
        timeout is the request's doing (it asked for more than fits) and does not count against the
        target.
        """
        lim = self.limits
        remaining = max(plan.deadline - time.perf_counter(), 0.001)
        r = plan.route
        out = r.max_tokens or r.expected_output_tokens
        ttft, e2e = self.view.latency.predict(self._by_id[tid], r.prompt_tokens, out)
        predicted_s = (ttft if stream else e2e) / 1000
        own = max(lim.attempt_timeout_floor_s, lim.attempt_timeout_factor * predicted_s)
        last = attempt + 1 >= len(plan.attempts)  # nothing left to fail over to: wait what is left
        return (remaining if last else min(own, remaining)), own < remaining

    def _finish_span(
        self, span: Span, tid: str, reason: str, cost: float, usage: Any
    ) -> dict[str, str]:
        usage = usage or {}
        span.set_attributes({
            "gen_ai.response.model": tid, "router.target": tid, "router.reason": reason,
            "router.cost_usd": cost, "router.fallback": "+" in reason,
            "gen_ai.usage.input_tokens": int(usage.get("prompt_tokens") or 0),
            "gen_ai.usage.output_tokens": int(usage.get("completion_tokens") or 0),
        })
        return _headers(tid, reason, cost)

    def _fail(self, span: Span, e: BaseException, endpoint: str) -> None:
        record_error(span, e)
        if isinstance(e, RouterError):
            self.metrics.request("none", endpoint, e.code)
        elif not isinstance(e, asyncio.CancelledError):
            self.metrics.request("none", endpoint, "internal_error")


def _headers(tid: str, reason: str, cost: float) -> dict[str, str]:
    return {"x-router-target": tid, "x-router-reason": reason, "x-router-cost-usd": f"{cost:.8f}"}


def _model_of(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model[:100] if isinstance(model, str) else None

