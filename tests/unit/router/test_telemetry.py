"""Spans (names, kinds, parents, gen_ai.* / router.* attributes) and that secrets never leak."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from deployments.provider import ProviderClient, ProviderConfig
from router.auth import AuthConfig, KeyStore
from router.telemetry import Telemetry, TelemetryConfig, build_tracer_provider
from tests.support.fake_openai import FakeOpenAI
from tests.unit.router.fakes import FakeTarget, Rig, chat_body

PROMPT = "PROMPT-SECRET-7f3a what is the capital of Atlantis"
PROVIDER_KEY = "sk-provider-SECRET-0d1e2f"
BEARER_KEY = "rk-bearer-SECRET-9a8b7c"


def by_name(spans: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


async def test_spans_for_a_routed_request() -> None:
    rig = Rig()
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200
    spans = by_name(rig.spans())
    assert set(spans) == {"POST /v1/chat/completions", "router.decide", "chat small"}
    names = ("POST /v1/chat/completions", "router.decide", "chat small")
    server, decide, client = (spans[n][0] for n in names)
    assert server.kind == SpanKind.SERVER and client.kind == SpanKind.CLIENT
    assert decide.parent.span_id == server.context.span_id == client.parent.span_id
    assert decide.context.trace_id == server.context.trace_id == client.context.trace_id
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "auto"
    assert a["gen_ai.response.model"] == "small" and a["router.target"] == "small"
    assert a["router.reason"] == "cheapest-fit" and a["router.fallback"] is False
    assert a["gen_ai.usage.input_tokens"] == 3 and a["gen_ai.usage.output_tokens"] == 4
    assert a["router.cost_usd"] == pytest.approx(float(r.headers["x-router-cost-usd"]), abs=1e-8)
    d = decide.attributes
    assert list(d["router.candidates"]) == ["small", "big", "api"]
    assert d["router.chosen"] == "small" and d["router.outcome"] == "route"
    assert len(d["router.candidates.quality"]) == 3 and list(d["router.candidates.fits"]) == [True] * 3
    assert d["router.predicted.cost_usd"] > 0 and d["router.predicted.latency_ms"] > 0
    c = client.attributes
    assert c["gen_ai.request.model"] == "small" and c["gen_ai.response.model"] == "small"
    assert c["gen_ai.usage.output_tokens"] == 4 and c["router.attempt"] == 0


async def test_spans_for_failover_and_stream() -> None:
    rig = Rig({t: FakeTarget(t, fail_first=1 if t == "small" else 0) for t in ("small", "big", "api")})
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    spans = by_name(rig.spans())
    failed, ok = spans["chat small"][0], spans["chat big"][0]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "upstream_error"
    assert ok.attributes["router.attempt"] == 1 and ok.attributes["gen_ai.usage.output_tokens"] == 4
    server = spans["POST /v1/chat/completions"][0]
    assert server.attributes["router.fallback"] is True and server.attributes["router.target"] == "big"
    assert server.end_time >= ok.end_time


async def test_rejected_request_span_has_error_and_decision() -> None:
    rig = Rig()
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions",
                            json=chat_body(routing={"min_quality": 0.99, "allow_fallback": False}))
    assert r.status_code == 422
    spans = by_name(rig.spans())
    assert spans["router.decide"][0].attributes["router.outcome"] == "reject"
    server = spans["POST /v1/chat/completions"][0]
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["error.type"] == "constraints_unsatisfiable"


async def test_completions_span_name_and_operation() -> None:
    rig = Rig()
    async with rig.http() as http:
        await http.post("/v1/completions", json={"model": "auto", "prompt": "hi"})
    server = by_name(rig.spans())["POST /v1/completions"][0]
    assert server.attributes["gen_ai.operation.name"] == "text_completion"


async def test_prompt_recorded_only_when_enabled() -> None:
    for record in (False, True):
        rig = Rig(record_prompts=record)
        async with rig.http() as http:
            await http.post("/v1/chat/completions", json=chat_body(PROMPT))
        dumped = "".join(s.to_json() for s in rig.spans())
        assert (PROMPT in dumped) is record


def test_exporter_config() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NoOpTracerProvider

    assert isinstance(build_tracer_provider(TelemetryConfig()), NoOpTracerProvider)
    console = build_tracer_provider(TelemetryConfig(exporter="console", service_name="r1"))
    assert isinstance(console, TracerProvider) and console.resource.attributes["service.name"] == "r1"
    console.shutdown()
    otlp = Telemetry(TelemetryConfig(exporter="otlp", otlp_endpoint="http://127.0.0.1:9/v1/traces"))
    otlp.shutdown()
    with pytest.raises(ValueError, match="otlp_endpoint"):
        TelemetryConfig(exporter="otlp")
    assert all(f.description for f in TelemetryConfig.model_fields.values())


@pytest.fixture
def provider_server() -> Any:
    with FakeOpenAI(api_key=PROVIDER_KEY) as server:
        yield server


async def test_keys_and_prompt_never_in_spans_or_logs(provider_server: Any, caplog: Any) -> None:
    cfg = ProviderConfig(id="api", base_url=provider_server.base_url, model="fake-model",
                         api_key_env="UNUSED_PROVIDER_KEY_ENV")
    provider = ProviderClient(cfg, PROVIDER_KEY)
    auth = KeyStore.from_config(AuthConfig(keys_env="K"), {"K": BEARER_KEY})
    rig = Rig(auth=auth, clients={"api": provider})
    headers = {"authorization": f"Bearer {BEARER_KEY}"}
    caplog.set_level(logging.DEBUG)
    async with rig.http() as http:
        strong = chat_body(PROMPT, routing={"min_quality": 0.9})
        r = await http.post("/v1/chat/completions", json=strong, headers=headers)
        assert r.status_code == 200 and r.headers["x-router-target"] == "api"
        r = await http.post("/v1/chat/completions", json=strong | {"stream": True}, headers=headers)
        assert r.status_code == 200 and "data: [DONE]" in r.text
        provider_server.script("500", "500", "500", "500", "500")  # provider fails: error paths log
        r = await http.post("/v1/chat/completions", json=strong | {"model": "api"}, headers=headers)
        assert r.status_code >= 500
        r = await http.post("/v1/chat/completions", json=strong,
                            headers={"authorization": f"Bearer {BEARER_KEY}x"})
        assert r.status_code == 401 and BEARER_KEY not in r.text
        r = await http.post("/v1/chat/completions", json=chat_body(PROMPT, routing={"nope": 1}),
                            headers=headers)
        assert r.status_code == 400 and PROMPT not in r.text
    await provider.aclose()
    # the provider really got the key (so the check below is meaningful)
    assert provider_server.requests[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert provider_server.requests[0].body["messages"][0]["content"] == PROMPT
    spans = rig.spans()
    assert len(spans) >= 8
    dumped = "".join(s.to_json() for s in spans)
    logs = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    for secret in (PROVIDER_KEY, BEARER_KEY, PROMPT, "PROMPT-SECRET"):
        assert secret not in dumped, secret
        assert secret not in logs, secret
