"""The request execution core: parse → authenticate → decide → call (with failover) → account.

No Ray and no Starlette here: the ingress hands in plain dicts and gets back a response dict (or an
async iterator of chunk dicts) plus the `x-router-*` headers. Every upstream call feeds the live view
(started/finished, latency on success, errors) that the policy reads on the next decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from deployments.target import TargetClient
from policies.base import Policy
from policies.types import Target
from router.auth import AuthConfig, KeyStore
from router.errors import (
    BadGateway,
    NoHealthyTarget,
    RouterError,
    StreamInterrupted,
    UpstreamError,
    UpstreamTimeout,
)
from router.failures import upstream_failure
from router.limits import LimitsConfig
from router.metrics import Metrics, NoMetrics
from router.parse import Endpoint
from router.plan import Plan, Planner
from router.telemetry import Telemetry, record_error
from router.usage import answer_signal, content_of, split_latency, usage_of
from router.view import LiveView

logger = logging.getLogger(__name__)


@dataclass
class _Call:
    """One upstream call: its target, span, estimator ticket and start time."""

    tid: str
    span: Span
    ticket: Any
    t0: float = field(default_factory=time.perf_counter)
    body: Mapping[str, Any] = field(default_factory=dict)
    own_limit: bool = True  # False: the request's deadline, not the target's slowness, bounded the wait


def _retryable(e: BaseException) -> bool:
    # Class attribute on purpose: Ray re-raises handle errors as a subclass of the cause's class.
    return not isinstance(e, RouterError) or (isinstance(e, UpstreamError) and e.retryable)


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
        self._accept = getattr(policy, "accept", None)  # cascade policies only
        self.planner = Planner(
            self.targets, policy, view, self.auth, self.limits, self.telemetry, self.metrics
        )
        self._created = int(time.time())

    # -- public API used by the handlers -----------------------------------------------------------
    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat"
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Non-streaming request: (OpenAI response dict, x-router-* headers)."""
        span = self.telemetry.server(endpoint, _model_of(body))
        try:
            plan = self.planner.plan(body, headers, endpoint, span)
            resp, tid, reason, cost = await self._run(plan)
            self.metrics.request(tid, endpoint, "ok")
            return resp, self._finish_span(span, tid, reason, cost, resp.get("usage"), plan)
        except BaseException as e:
            self._fail(span, e, endpoint)
            raise
        finally:
            span.end()

    async def chat_stream(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat"
    ) -> tuple[AsyncIterator[dict[str, Any]], dict[str, str]]:
        """Streaming request: returns once a target has produced its first chunk.

        Failures before that chunk move on to the next alternate; later ones end the stream with an
        `{"error": ...}` chunk. The cost header is the estimate (the actual cost is charged at the end).
        """
        span = self.telemetry.server(endpoint, _model_of(body))
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
                call = self._start(plan, tid, i)
                agen = None
                try:
                    call.body = sent = {**plan.body, "model": tid}
                    agen = self.clients[tid].stream(plan.endpoint, sent)
                    first = await asyncio.wait_for(agen.__anext__(), self._attempt_timeout(plan, call, i, True))
                except BaseException as e:
                    await _aclose(agen)
                    last = self._upstream_failed(call, e)
                    continue
                reason = plan.reason + ("+failover" if i else "")
                estimate = self._by_id[tid].expected_cost_usd(
                    plan.route.prompt_tokens, plan.route.output_tokens
                )
                stream = self._relay(plan, call, reason, agen, first, wants_usage)
                return stream, _headers(tid, reason, estimate)
            raise last or NoHealthyTarget("no healthy target left to try")
        except BaseException as e:
            self._fail(span, e, endpoint)
            span.end()
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

    def health(self) -> dict[str, Any]:
        states = {t.id: self.view.state(t.id) for t in self.targets}
        ok = any(s == "healthy" for s in states.values())
        return {"status": "ok" if ok else "degraded", "targets": states}

    # -- non-streaming execution --------------------------------------------------------------------
    async def _run(self, plan: Plan) -> tuple[dict[str, Any], str, str, float]:
        last: BaseException | None = None
        kept: tuple[dict[str, Any], str, str, float] | None = None  # a cascade answer we escalated from
        spent = 0.0
        for i, tid in enumerate(plan.attempts):
            if i and not self._next_ok(plan, tid, last, escalating=kept is not None):
                continue
            try:
                resp, cost = await self._call(plan, tid, i)
            except UpstreamError as e:
                if not e.retryable:
                    raise
                last = e
                continue
            spent += cost
            reason = plan.reason + ("+escalated" if kept else "+failover" if i else "")
            answer = (resp, tid, reason, spent)
            if self._escalate(plan, resp, i):
                kept = answer
                last = None
                continue
            self._account(plan, tid, spent)
            return answer
        if kept is not None:
            self._account(plan, kept[1], spent)
            return kept[0], kept[1], kept[2], spent
        raise last or NoHealthyTarget("no healthy target left to try")

    async def _call(self, plan: Plan, tid: str, attempt: int) -> tuple[dict[str, Any], float]:
        body = {**plan.body, "model": tid}
        if self._accept is not None and plan.auto and "logprobs" not in body:
            body["logprobs"] = True if plan.endpoint == "chat" else 1
        call = self._start(plan, tid, attempt)
        call.body = body
        try:
            resp = await asyncio.wait_for(
                self.clients[tid].complete(plan.endpoint, body), self._attempt_timeout(plan, call, attempt, False)
            )
        except BaseException as e:
            raise self._upstream_failed(call, e) from None
        e2e_ms = (time.perf_counter() - call.t0) * 1000
        target = self._by_id[tid]
        usage = usage_of(resp, plan.route.prompt_tokens, plan.endpoint)
        resp["model"] = tid
        ttft, tpot = split_latency(target, e2e_ms, usage["completion_tokens"])
        self.view.observe(tid, ttft, tpot, usage["completion_tokens"], call.ticket)
        self.view.finished(tid, call.ticket)
        self.metrics.e2e(tid, e2e_ms)
        cost = target.expected_cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
        _usage_attrs(call.span, tid, usage)
        call.span.end()
        return resp, cost

    def _escalate(self, plan: Plan, resp: dict[str, Any], i: int) -> bool:
        if self._accept is None or not plan.auto or i + 1 >= len(plan.attempts):
            return False
        text, mean_logprob = answer_signal(resp, plan.endpoint)
        if "logprobs" not in plan.body:
            for choice in resp.get("choices") or ():
                choice.pop("logprobs", None)
        return not self._accept(text, mean_logprob)

    # -- streaming ----------------------------------------------------------------------------------
    async def _relay(
        self, plan: Plan, call: _Call, reason: str, agen: AsyncIterator[dict[str, Any]],
        first: dict[str, Any], wants_usage: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        tid = call.tid
        ttft_ms: float | None = None
        usage: dict[str, Any] | None = None
        pieces = 0
        failed: BaseException | None = None
        cancelled = False
        chunk = first
        try:
            while True:
                chunk["model"] = tid
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if content_of(chunk):
                    pieces += 1
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - call.t0) * 1000
                if not wants_usage:
                    chunk.pop("usage", None)
                if wants_usage or chunk.get("choices"):  # the usage-only chunk has `"choices": []`
                    yield chunk
                try:
                    chunk = await asyncio.wait_for(agen.__anext__(), self.limits.request_timeout_s)
                except StopAsyncIteration:
                    break
        except (asyncio.CancelledError, GeneratorExit):  # the client went away
            cancelled = True
            raise
        except Exception as e:
            failed = e
            err = e if isinstance(e, StreamInterrupted) else StreamInterrupted(
                f"target '{tid}' failed mid-stream ({type(e).__name__})"
            )
            logger.warning("stream from %s interrupted: %s", tid, type(e).__name__)
            yield err.body()
        finally:
            self._end_stream(plan, call, reason, ttft_ms, usage, pieces, failed, cancelled)
            await _aclose(agen)

    def _end_stream(
        self, plan: Plan, call: _Call, reason: str, ttft_ms: float | None,
        usage: dict[str, Any] | None, pieces: int, failed: BaseException | None, cancelled: bool,
    ) -> None:
        tid, cspan = call.tid, call.span
        e2e_ms = (time.perf_counter() - call.t0) * 1000
        target = self._by_id[tid]
        prompt_tokens = int((usage or {}).get("prompt_tokens") or plan.route.prompt_tokens)
        out = int((usage or {}).get("completion_tokens") or pieces)
        cost = target.expected_cost_usd(prompt_tokens, out)
        u = {"prompt_tokens": prompt_tokens, "completion_tokens": out}
        _usage_attrs(cspan, tid, u)
        if failed is not None:
            self.view.error(tid)
            record_error(cspan, failed)
            record_error(plan.span, failed)
            self.metrics.request(tid, plan.endpoint, "stream_error")
        elif cancelled:  # a partial answer says nothing about the target's latency
            plan.span.set_attribute("router.cancelled", True)
            self.metrics.request(tid, plan.endpoint, "cancelled")
        else:
            ttft = ttft_ms if ttft_ms is not None else e2e_ms
            self.view.observe(tid, ttft, (e2e_ms - ttft) / max(out - 1, 1), out, call.ticket)
            self.metrics.ttft(tid, ttft)
            self.metrics.e2e(tid, e2e_ms)
            self.metrics.request(tid, plan.endpoint, "ok")
        self.view.finished(tid, call.ticket)
        self._account(plan, tid, cost)
        self._finish_span(plan.span, tid, reason, cost, u, plan)
        cspan.end()
        plan.span.end()

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

    def _attempt_timeout(self, plan: Plan, call: _Call, attempt: int, stream: bool) -> float:
        """Time one attempt gets: a multiple of what the target should take for this request, within
        what is left of the request's deadline (`limits.request_timeout_s`, shared by all attempts).

        A target whose replicas died does not fail fast: Serve queues the call until a replica is back
        (a vLLM engine takes a minute to start). Bounding each attempt by its predicted latency (TTFT for
        streams, end to end for the request's own max_tokens otherwise) lets the request move to an
        alternate instead of waiting for the restart. When the deadline is what bounds the wait, a
        timeout is the request's doing (it asked for more than fits) and does not count against the
        target (`call.own_limit`).
        """
        lim = self.limits
        remaining = max(plan.deadline - time.perf_counter(), 0.001)
        r = plan.route
        out = r.max_tokens or r.expected_output_tokens
        ttft, e2e = self.view.latency.predict(self._by_id[call.tid], r.prompt_tokens, out)
        predicted_s = (ttft if stream else e2e) / 1000
        own = max(lim.attempt_timeout_floor_s, lim.attempt_timeout_factor * predicted_s)
        last = attempt + 1 >= len(plan.attempts)  # nothing left to fail over to: wait what is left
        call.own_limit = own < remaining
        return remaining if last else min(own, remaining)

    def _start(self, plan: Plan, tid: str, attempt: int) -> _Call:
        span = self.telemetry.client(plan.span, plan.endpoint, tid, attempt)
        return _Call(tid, span, self.view.started(tid))

    def _upstream_failed(self, call: _Call, e: BaseException) -> BaseException:
        """Book-keeping for a failed call; returns the error to raise or remember. Re-raises cancellation."""
        tid, cspan = call.tid, call.span
        if isinstance(e, asyncio.CancelledError):
            self.view.finished(tid, call.ticket)
            cspan.end()
            raise e
        counts = True
        if isinstance(e, asyncio.TimeoutError):
            e = UpstreamTimeout(f"target '{tid}' did not answer in time")
            counts = call.own_limit
        elif isinstance(e, StopAsyncIteration):
            e = BadGateway(f"target '{tid}' returned an empty stream")
        else:  # request-caused rejections become a 400 naming the field, never the target's fault
            e = upstream_failure(tid, e, call.body)
        if _retryable(e) and counts:
            self.view.error(tid)
        self.view.finished(tid, call.ticket)
        logger.warning("call to %s failed: %s", tid, getattr(e, "code", type(e).__name__))
        record_error(cspan, e)
        cspan.end()
        if not _retryable(e):
            raise e
        return e

    def _account(self, plan: Plan, tid: str, cost: float) -> None:
        self.auth.charge(plan.principal, cost)
        self.metrics.cost(tid, cost)

    def _finish_span(
        self, span: Span, tid: str, reason: str, cost: float, usage: Any, plan: Plan
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


def _usage_attrs(span: Span, tid: str, usage: Mapping[str, Any]) -> None:
    span.set_attributes({
        "gen_ai.response.model": tid,
        "gen_ai.usage.input_tokens": int(usage.get("prompt_tokens") or 0),
        "gen_ai.usage.output_tokens": int(usage.get("completion_tokens") or 0),
    })


async def _aclose(agen: Any) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken upstream must not mask the outcome
            pass
