"""The HTTP surface through the real `openai` client (and raw httpx) against the ASGI app."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.router.fakes import FakeTarget, Rig, chat_body


async def test_non_stream_auto_routes_to_cheapest_fit_with_headers_and_usage() -> None:
    rig = Rig()
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hi"}]
    )
    resp = raw.parse()
    assert raw.headers["x-router-target"] == "small"
    assert raw.headers["x-router-reason"] == "cheapest-fit"
    assert resp.model == "small"
    assert resp.choices[0].message.content == "hello from the fake"
    assert resp.usage.prompt_tokens == 2 and resp.usage.completion_tokens == 4
    expected = (2 * 0.1 + 4 * 0.2) / 1e6
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    # the target got the request with its own id and without our `routing` extension
    endpoint, body = rig.fakes["small"].calls[0]
    assert endpoint == "chat" and body["model"] == "small" and "routing" not in body


async def test_extra_body_routing_honoured() -> None:
    rig = Rig()
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Prove it"}],
        extra_body={"routing": {"min_quality": 0.9}},
    )
    assert raw.headers["x-router-target"] == "api"
    assert raw.parse().model == "api"


async def test_extra_headers_routing_honoured() -> None:
    rig = Rig()
    client = rig.openai()
    # small (~300 ms TTFT at p90 x1.5 = 450) and big miss a 200 ms TTFT bound; the provider meets it.
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "quick"}],
        extra_headers={"x-router-max-latency-ms": "200", "x-router-allow-fallback": "true"},
        extra_body={"routing": {"latency_metric": "ttft"}},
    )
    assert raw.headers["x-router-target"] == "api"


async def test_body_routing_wins_over_headers() -> None:
    rig = Rig()
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-router-min-quality": "0.9"},
        extra_body={"routing": {"min_quality": 0.5}},
    )
    assert raw.headers["x-router-target"] == "big"


async def test_pinned_target() -> None:
    rig = Rig()
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-router-target"] == "big" and raw.headers["x-router-reason"] == "pinned"


async def test_stream_with_openai_client() -> None:
    rig = Rig()
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hi"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"routing": {"min_quality": 0.6}},
    )
    assert raw.headers["x-router-target"] == "big"
    assert raw.headers["content-type"].startswith("text/event-stream")
    text, usage = "", None
    async for chunk in raw.parse():
        assert chunk.model == "big"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "hello from the fake"
    assert usage is not None and usage.completion_tokens == 4
    # the upstream was asked for usage in the stream
    assert rig.fakes["big"].calls[0][1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("options", [None, {"include_usage": False}])
async def test_stream_without_include_usage_has_no_usage_chunk(options) -> None:
    # The usual client loop `chunk.choices[0].delta.content` must work: no `"choices": []` chunk unless
    # the client asked for usage; the router still reads usage upstream for accounting.
    rig = Rig()
    extra = {} if options is None else {"stream_options": options}
    stream = await rig.openai().chat.completions.create(
        model="small", messages=[{"role": "user", "content": "Say hi"}], stream=True, **extra
    )
    text = ""
    async for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        assert chunk.usage is None
    assert text == "hello from the fake"
    assert rig.fakes["small"].calls[0][1]["stream_options"] == {"include_usage": True}
    assert rig.metrics.cost_usd["small"] > 0  # accounted from the upstream usage chunk


async def test_legacy_completions_stream_and_non_stream() -> None:
    rig = Rig()
    client = rig.openai()
    resp = await client.completions.create(model="auto", prompt="Once upon")
    assert resp.model == "small" and resp.choices[0].text == "hello from the fake"
    pieces = [c.choices[0].text async for c in await client.completions.create(
        model="auto", prompt="Once upon", stream=True) if c.choices]
    assert "".join(pieces) == "hello from the fake"


async def test_sse_wire_format() -> None:
    rig = Rig()
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True))
    lines = [ln for ln in r.text.split("\n\n") if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["model"] == "small"


async def test_models_lists_auto_and_targets_with_price_and_state() -> None:
    rig = Rig()
    models = await rig.openai().models.list()
    ids = [m.id for m in models.data]
    assert ids == ["auto", "small", "big", "api"]
    api = models.data[-1].model_dump()
    assert api["input_price_per_mtok"] == 2.0 and api["output_price_per_mtok"] == 8.0
    assert api["state"] == "healthy" and api["kind"] == "api"


async def test_healthz() -> None:
    rig = Rig({"small": FakeTarget("small"), "big": FakeTarget("big"), "api": FakeTarget("api")})
    rig.view.set_health("api", False)
    async with rig.http() as http:
        r = await http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "targets": {"small": "healthy", "big": "healthy", "api": "down"}}


async def test_service_is_fetched_lazily() -> None:
    from router.api import make_app

    holder: dict[str, object] = {}
    app = make_app(lambda: holder["service"])  # nothing exists yet when the app is built
    holder["service"] = Rig().service
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200 and r.headers["x-router-target"] == "small"


async def test_openapi_describes_the_request_bodies() -> None:
    rig = Rig()
    async with rig.http() as http:
        doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for path, name in (("/v1/chat/completions", "ChatRequest"), ("/v1/completions", "CompletionRequest")):
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{name}"
        assert op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schemas["ChatRequest"]["properties"]["temperature"]["anyOf"][0]["maximum"] == 2
    assert "messages" in schemas["ChatRequest"]["required"] and "prompt" in schemas["CompletionRequest"]["required"]
    # every $ref resolves inside the document (schema fuzzers need a closed document)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs and refs <= set(schemas)
