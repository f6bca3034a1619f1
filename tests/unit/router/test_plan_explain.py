"""The planner asks the policy for per-candidate estimates only when the decision span records them."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from policies.config import build_policy, parse_policy
from policies.latency import LatencyEstimator
from policies.types import Decision, RouteRequest
from router.service import RouterService
from router.telemetry import Telemetry, TelemetryConfig
from router.view import LiveView
from tests.unit.router.fakes import FakeTarget, PriorQuality, chat_body, targets


class Recording:
    """The real cheapest-fit, recording what it was asked and what it answered."""

    name = "cheapest-fit"

    def __init__(self) -> None:
        self.inner = build_policy(parse_policy({"name": "cheapest-fit"}))
        self.seen: list[tuple[bool, Decision]] = []

    def decide(self, request: RouteRequest, view: Any) -> Decision:
        d = self.inner.decide(request, view)
        self.seen.append((request.explain, d))
        return d


def _service(telemetry: Telemetry, policy: Recording) -> RouterService:
    ts = targets()
    return RouterService(ts, {t.id: FakeTarget(t.id) for t in ts}, policy,
                         LiveView(ts, LatencyEstimator(ts), PriorQuality()), telemetry=telemetry)


async def test_untraced_decisions_skip_the_candidates_traced_ones_keep_them() -> None:
    untraced, traced = Recording(), Recording()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body = chat_body("hello", routing={"min_quality": 0.6})
    _, h_off = await _service(Telemetry(TelemetryConfig()), untraced).chat(dict(body), {})  # exporter none
    _, h_on = await _service(Telemetry(TelemetryConfig(), provider), traced).chat(dict(body), {})
    [(explain_off, d_off)], [(explain_on, d_on)] = untraced.seen, traced.seen
    assert (explain_off, explain_on) == (False, True)
    assert d_off.candidates == () and [e.target for e in d_on.candidates] == ["small", "big", "api"]
    assert d_off.model_dump(exclude={"candidates"}) == d_on.model_dump(exclude={"candidates"})
    assert h_off["x-router-target"] == h_on["x-router-target"] == "big"
    assert h_off["x-router-reason"] == h_on["x-router-reason"] == "cheapest-fit"
    decide = next(s for s in exporter.get_finished_spans() if s.name == "router.decide")
    assert list(decide.attributes["router.candidates"]) == ["small", "big", "api"]
