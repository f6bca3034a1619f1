"""Small parts: constraint merging, token estimates, the live view's health, metrics, no Ray import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from policies.types import Constraints
from router.errors import BadRequest
from router.metrics import BufferedMetrics, InMemoryMetrics, NoMetrics, default_metrics
from router.parse import (
    Routing,
    estimate_tokens,
    merge_constraints,
    parse_body,
    prompt_and_tokens,
    routing_from_headers,
)
from router.usage import answer_signal, split_latency, usage_of
from router.view import LiveView
from tests.unit.router.fakes import PriorQuality, targets


def test_headers_parse_case_insensitive_values() -> None:
    r = routing_from_headers({"x-router-max-latency-ms": "250", "x-router-allow-fallback": "No",
                              "x-router-max-cost-usd": "0.01", "x-router-latency-metric": "ttft"})
    assert r == Routing(max_latency_ms=250, allow_fallback=False, max_cost_usd=0.01, latency_metric="ttft")
    assert routing_from_headers({"content-type": "application/json"}) is None
    with pytest.raises(BadRequest, match="x-router-max-latency-ms"):
        routing_from_headers({"x-router-max-latency-ms": "soon"})


def test_merge_layers_and_allowed_intersection() -> None:
    base = Constraints(min_quality=0.5, max_latency_ms=1000)
    merged = merge_constraints(
        base, Routing(min_quality=0.7, allowed_targets=("a", "b", "c")),
        Routing(max_latency_ms=200, allowed_targets=("b", "c", "d")), key_allowed=("a", "b", "x"),
    )
    assert merged.min_quality == 0.7 and merged.max_latency_ms == 200
    assert merged.allowed_targets == ("b",)
    assert merge_constraints(base, None, None).allowed_targets is None


def test_prompt_text_and_token_estimate() -> None:
    req = parse_body({"model": "auto", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "abcd" * 10},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ]}, "chat")
    text, tokens = prompt_and_tokens(req)
    assert text == "abcd" * 10 and tokens == 2 + 4 + 10 + 4 + 0 + 4 + 2
    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2
    text, tokens = prompt_and_tokens(parse_body({"model": "m", "prompt": ["ab", "cd"]}, "completions"))
    assert text == "ab\ncd" and tokens == 2


def test_usage_and_signal_helpers() -> None:
    resp = {"choices": [{"text": "one two", "logprobs": {"token_logprobs": [-1.0, -3.0, None]}}]}
    assert answer_signal(resp, "completions") == ("one two", -2.0)
    u = usage_of(resp, 7, "completions")
    assert u["prompt_tokens"] == 7 and resp["usage"] is u
    ttft, tpot = split_latency(targets()[0], 1000.0, 11)  # prior 300 ms + 10 x 40 ms
    assert ttft == pytest.approx(1000 * 300 / 700) and tpot == pytest.approx((1000 - ttft) / 10)
    assert split_latency(targets()[0], 50.0, 1) == (50.0, 0.0)


class StaticLatency:
    def predict(self, target, prompt_tokens, output_tokens):  # type: ignore[no-untyped-def]
        return 1.0, 2.0


def test_live_view_health_sources() -> None:
    now = [0.0]
    view = LiveView(targets(), StaticLatency(), PriorQuality(), error_threshold=2, cooldown_s=5,
                    clock=lambda: now[0])
    view.started("small")  # no-op feedback on a static latency view
    view.error("small")
    assert view.healthy("small")
    view.observe("small", 1, 1, 1)  # success resets the count
    view.error("small")
    assert view.healthy("small")
    view.error("small")
    assert view.state("small") == "cooling_down"
    now[0] = 5.0
    assert view.state("small") == "healthy"
    view.set_health("big", False)
    assert view.state("big") == "down"
    view.set_health("big", None)
    assert view.healthy("big")

    def broken() -> bool:
        raise RuntimeError("probe failed")

    view.add_health_check("api", broken)
    assert view.state("api") == "down"
    assert [t.id for t in view.targets] == ["small", "big", "api"]


def test_metrics_in_memory_and_default_without_ray() -> None:
    m = InMemoryMetrics()
    m.request("small", "chat", "ok")
    m.request("small", "chat", "ok")
    m.fallback("small", "big", "error")
    m.cost("small", 0.5)
    m.cost("small", 0.25)
    assert m.requests[("small", "chat", "ok")] == 2 and m.cost_usd["small"] == 0.75
    assert isinstance(default_metrics(), NoMetrics)  # Ray not initialised in unit tests


def test_buffered_metrics_reach_the_sink_only_on_flush_summed_per_label_set() -> None:
    sink = InMemoryMetrics()
    m = BufferedMetrics(sink)
    for _ in range(3):
        m.request("small", "chat", "ok")
        m.e2e("small", 20.0)
    m.request("big", "chat", "stream_error")
    m.fallback("small", "big", "error")
    m.cost("small", 0.5)
    m.cost("small", 0.0)  # zero costs are not counted
    m.decision(0.1)
    m.ttft("big", 5.0)
    assert not sink.requests and not sink.e2e_ms and not sink.decisions_ms
    assert m.flush() == 2 + 1 + 1 + 5
    assert sink.requests == {("small", "chat", "ok"): 3, ("big", "chat", "stream_error"): 1}
    assert sink.e2e_ms == {"small": [20.0] * 3} and sink.ttft_ms == {"big": [5.0]}
    assert sink.decisions_ms == [0.1] and sink.cost_usd == {"small": 0.5}
    assert sink.fallbacks == {("small", "big", "error"): 1}
    assert m.flush() == 0  # drained


def test_buffered_metrics_flush_inline_when_nobody_flushes() -> None:
    sink = InMemoryMetrics()
    m = BufferedMetrics(sink, max_pending=10)
    for _ in range(25):
        m.e2e("small", 1.0)
    assert len(sink.e2e_ms["small"]) == 20 and len(m._observed) == 5


def test_request_path_modules_do_not_import_ray() -> None:
    code = ("import sys, router.service, router.api, router.view, router.metrics, router.telemetry; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_ingress_replica_models_its_share_of_target_slots() -> None:
    from policies.types import Target
    from router.ingress import per_ingress

    t = Target(id="small", kind="local", input_price_per_mtok=0.1, output_price_per_mtok=0.2,
               context_window=2048, quality_prior=0.5, latency={"max_concurrency": 8})
    assert per_ingress([t], 1) == [t]
    assert [x.latency.max_concurrency for x in per_ingress([t], 3)] == [3]  # ceil(8 / 3)
    assert per_ingress([t], 16)[0].latency.max_concurrency == 1
    assert per_ingress([t], 3)[0].latency.ttft_ms == t.latency.ttft_ms
