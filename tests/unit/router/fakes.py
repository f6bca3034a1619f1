"""Deterministic fakes at the router's seams: TargetClient, Policy, QualityPredictor, and a builder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from policies.latency import LatencyEstimator
from policies.types import Decision, Estimate, LatencyPrior, RouteRequest, Target
from router.api import make_app
from router.auth import AuthConfig, KeyStore
from router.errors import BadGateway
from router.limits import LimitsConfig
from router.metrics import InMemoryMetrics
from router.service import RouterService
from router.telemetry import Telemetry, TelemetryConfig
from router.view import LiveView


class FakeTarget:
    """A TargetClient answering `answer` word by word.

    fail_first: the first N calls raise `error` before any output; fail_after: streams raise `error`
    after that many content chunks (non-streams raise at once); error_event_after: streams send a
    vLLM-style `{"error": ...}` event after that many chunks; delay_s: wait before the first token.
    `cancelled` counts calls that were cancelled or closed before they finished (as the engine sees it).
    """

    def __init__(
        self,
        tid: str,
        answer: str = "hello from the fake",
        *,
        delay_s: float = 0.0,
        fail_first: int = 0,
        fail_after: int | None = None,
        error: BaseException | None = None,
        usage: bool = True,
        logprob: float | None = None,
        error_event_after: int | None = None,
    ) -> None:
        self.tid = tid
        self.answer = answer
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.fail_after = fail_after
        self.error = error or BadGateway("fake target failure")
        self.usage = usage
        self.logprob = logprob
        self.error_event_after = error_event_after
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancelled = 0

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        # Tolerant like an engine that ignores fields of the other endpoint (fuzzed bodies carry anything).
        msgs = body.get("messages")
        msgs = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
        p = sum(len(str(m.get("content", "")).split()) for m in msgs) or len(str(body.get("prompt", "")).split())
        c = len(self.answer.split())
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def _start(self, endpoint: str, body: dict[str, Any]) -> None:
        self.calls.append((endpoint, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if len(self.calls) <= self.fail_first:
            raise self.error

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            await self._start(endpoint, body)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail_after is not None:
            raise self.error
        if endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": self.answer},
            }
            if self.logprob is not None and body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": w, "logprob": self.logprob, "top_logprobs": []}
                                                  for w in self.answer.split()]}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": self.answer, "logprobs": None}
            obj = "text_completion"
        resp = {"id": "cmpl-1", "object": obj, "created": int(time.time()), "model": body["model"],
                "choices": [choice]}
        if self.usage:
            resp["usage"] = self._usage(body)
        return resp

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        done = False
        try:
            async for chunk in self._chunks(endpoint, body):
                yield chunk
            done = True
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException:  # our own scripted failure, not a cancellation
            done = True
            raise
        finally:
            if not done:
                self.cancelled += 1

    async def _chunks(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        await self._start(endpoint, body)
        base = {"id": "cmpl-1", "created": int(time.time()), "model": body["model"]}
        for i, word in enumerate(self.answer.split()):
            if self.error_event_after is not None and i >= self.error_event_after:
                yield {"error": {"object": "error", "message": "engine died", "type": "InternalServerError",
                                 "code": 500}}
                return
            if self.fail_after is not None and i >= self.fail_after:
                raise self.error
            text = word if i == 0 else " " + word
            if endpoint == "chat":
                yield {**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            else:
                yield {**base, "object": "text_completion",
                       "choices": [{"index": 0, "text": text, "finish_reason": None}]}
            await asyncio.sleep(0)
        if self.usage:
            obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
            yield {**base, "object": obj, "choices": [], "usage": self._usage(body)}


class PriorQuality:
    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        return {t.id: t.quality_prior for t in targets}


class FitPolicy:
    """Cheapest healthy target that meets min_quality, latency, cost and fallback; else reject."""

    name = "test-fit"

    def decide(self, request: RouteRequest, view: Any) -> Decision:
        c = request.constraints
        quality = view.quality.predict(request.prompt, view.targets)
        ests, fits = [], []
        for t in sorted(view.targets, key=lambda t: t.output_price_per_mtok):
            ttft, e2e = view.latency.predict(t, request.prompt_tokens, request.output_tokens)
            lat = ttft if c.latency_metric == "ttft" else e2e
            cost = t.expected_cost_usd(request.prompt_tokens, request.output_tokens)
            why = None
            if c.allowed_targets is not None and t.id not in c.allowed_targets:
                why = "not-allowed"
            elif not view.healthy(t.id):
                why = "unhealthy"
            elif c.min_quality is not None and quality[t.id] < c.min_quality:
                why = "quality"
            elif c.max_latency_ms is not None and lat > c.max_latency_ms:
                why = "latency"
            elif c.max_cost_usd is not None and cost > c.max_cost_usd:
                why = "cost"
            elif t.kind == "api" and not c.allow_fallback:
                why = "fallback-disallowed"
            ests.append(Estimate(target=t.id, quality=quality[t.id], ttft_ms=ttft, e2e_ms=e2e,
                                 cost_usd=cost, fits=why is None, why_not=why))
            if why is None:
                fits.append(t.id)
        if not fits:
            return Decision(target=None, outcome="reject", reason="no-target-fits", candidates=tuple(ests))
        chosen = next(e for e in ests if e.target == fits[0])
        return Decision(target=fits[0], alternates=tuple(fits[1:]), reason="cheapest-fit",
                        predicted_quality=chosen.quality, predicted_latency_ms=chosen.e2e_ms,
                        predicted_cost_usd=chosen.cost_usd, candidates=tuple(ests))


class CascadePolicy(FitPolicy):
    name = "test-cascade"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.seen: list[tuple[str, float | None]] = []

    def accept(self, answer_text: str, mean_logprob: float | None) -> bool:
        self.seen.append((answer_text, mean_logprob))
        return mean_logprob is not None and mean_logprob >= self.threshold


def targets() -> list[Target]:
    """small (local, cheap, weak), big (local), api (provider: strong, fast, pricey)."""
    return [
        Target(id="small", kind="local", input_price_per_mtok=0.1, output_price_per_mtok=0.2,
               context_window=2048, quality_prior=0.4, latency=LatencyPrior(ttft_ms=300, tpot_ms=40)),
        Target(id="big", kind="local", input_price_per_mtok=0.5, output_price_per_mtok=1.0,
               context_window=4096, quality_prior=0.7, latency=LatencyPrior(ttft_ms=600, tpot_ms=80)),
        Target(id="api", kind="api", input_price_per_mtok=2.0, output_price_per_mtok=8.0,
               context_window=8192, quality_prior=0.95, latency=LatencyPrior(ttft_ms=100, tpot_ms=5)),
    ]


class Rig:
    """A RouterService over fakes plus its app, in-memory spans and metrics."""

    def __init__(
        self,
        fakes: dict[str, FakeTarget] | None = None,
        *,
        policy: Any = None,
        auth: KeyStore | None = None,
        limits: LimitsConfig | None = None,
        record_prompts: bool = False,
        clients: dict[str, Any] | None = None,
        clock: Any = time.monotonic,
        quality: Any = None,
    ) -> None:
        self.targets = targets()
        self.fakes = fakes if fakes is not None else {t.id: FakeTarget(t.id) for t in self.targets}
        self.estimator = LatencyEstimator(self.targets)
        self.view = LiveView(
            self.targets, self.estimator, quality or PriorQuality(), cooldown_s=30, clock=clock
        )
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metrics = InMemoryMetrics()
        self.service = RouterService(
            self.targets, {**self.fakes, **(clients or {})}, policy or FitPolicy(), self.view,
            auth=auth or KeyStore(AuthConfig()), limits=limits or LimitsConfig(),
            telemetry=Telemetry(TelemetryConfig(record_prompts=record_prompts), provider),
            metrics=self.metrics,
        )
        self.app = make_app(lambda: self.service)

    def http(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://router")

    def openai(self, api_key: str = "none", **kw: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=api_key, base_url="http://router/v1", http_client=self.http(), max_retries=0, **kw
        )

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


def chat_body(text: str = "What is 2+2?", **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


def auth_store(**kw: Any) -> KeyStore:
    return KeyStore(AuthConfig(**kw))
