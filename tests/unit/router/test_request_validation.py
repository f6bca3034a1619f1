"""Edge validation (issue 12): what real clients send gets a 400 naming the field before any upstream
call, never a 5xx, never the value, and never a mark against a target."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from policies.latency import LatencyEstimator
from policies.types import LatencyPrior, Target
from router.api import make_app
from router.limits import LimitsConfig
from router.service import RouterService
from router.view import LiveView
from tests.unit.router.fakes import FakeTarget, FitPolicy, PriorQuality, Rig, chat_body

SECRET = "MY SECRET PROMPT"


def _user(content: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}]}


# (name, path, raw body, status, code, param)
CASES: list[tuple[str, str, Any, int, str | None, str | None]] = [
    ("temperature as text", "chat", {**chat_body(SECRET), "temperature": "hot"}, 400, None, "temperature"),
    ("temperature too high", "chat", {**chat_body(SECRET), "temperature": 5}, 400, None, "temperature"),
    ("content null", "chat", _user(None), 400, None, "messages[0].content"),
    ("lone surrogate", "chat", b'{"model":"auto","messages":[{"role":"user","content":"\\ud800 ' + SECRET.encode()
     + b'"}]}', 400, "invalid_unicode", "messages[0].content"),
    ("empty completion prompt", "completions", {"model": "auto", "prompt": ""}, 400, None, "prompt"),
    ("empty prompt in a list", "completions", {"model": "auto", "prompt": ["a", ""]}, 400, None, None),
    ("deep nesting", "chat", b"[" * 100_000 + b"]" * 100_000, 400, "nesting_too_deep", None),
    ("deep nesting in an extra field", "chat", {**chat_body(SECRET), "x": json.loads("[" * 80 + "]" * 80)}, 400,
     "nesting_too_deep", "x"),
    ("n over the limit", "chat", {**chat_body(SECRET), "n": 1000}, 400, None, "n"),
    ("n zero", "chat", {**chat_body(SECRET), "n": 0}, 400, None, "n"),
    ("max_tokens as float", "chat", {**chat_body(SECRET), "max_tokens": 1e9}, 400, None, "max_tokens"),
    ("max_tokens beyond every context", "chat", {**chat_body(SECRET), "max_tokens": 10**9}, 400,
     "context_length_exceeded", "max_tokens"),
    ("max_tokens beyond int64", "chat", {**chat_body(SECRET), "max_tokens": 10**30}, 400, None, "max_tokens"),
    ("max_completion_tokens beyond the pinned context", "chat",
     {**chat_body(SECRET, model="small"), "max_completion_tokens": 3000}, 400, "context_length_exceeded",
     "max_completion_tokens"),
    ("secret in a content part", "chat", _user([{"type": "text", "txt": SECRET}]), 400, None, None),
    ("secret as a role", "chat", {"model": "auto", "messages": [{"role": SECRET, "content": "x"}]}, 400, None,
     "messages[0].role"),
    ("secret as a part type", "chat", _user([{"type": SECRET, "text": "x"}]), 400, None, None),
    ("unknown allowed target", "chat", {**chat_body(SECRET), "routing": {"allowed_targets": ["small", "gpt-9"]}},
     400, "model_not_found", "routing.allowed_targets"),
    ("tools without a tool-capable target", "chat",
     {**chat_body(SECRET), "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools_not_supported",
     "tools"),
    ("stream_options without stream", "chat", {**chat_body(SECRET), "stream_options": {"include_usage": True}},
     400, None, "stream_options"),
    ("top_p zero", "chat", {**chat_body(SECRET), "top_p": 0}, 400, None, "top_p"),
    ("stop of the wrong type", "chat", {**chat_body(SECRET), "stop": 5}, 400, None, "stop"),
    ("tool message without its call id", "chat",
     {"model": "auto", "messages": [{"role": "tool", "content": "x"}]}, 400, None, "messages[0].tool_call_id"),
    ("assistant without content", "chat", {"model": "auto", "messages": [{"role": "assistant"}]}, 400, None,
     "messages[0].content"),
]


@pytest.mark.parametrize("name,path,body,status,code,param", CASES, ids=[c[0] for c in CASES])
async def test_bad_request_is_a_400_naming_the_field(name, path, body, status, code, param, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    rig = Rig()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with rig.http() as http:
        r = await http.post(f"/v1/{'chat/completions' if path == 'chat' else 'completions'}", content=content,
                            headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if code:
        assert err["code"] == code
    if param:
        assert err.get("param") == param and param.split("[")[0] in err["message"]
    assert SECRET not in r.text and SECRET not in caplog.text
    assert not any(f.calls for f in rig.fakes.values())  # rejected before any upstream call


VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("n within the limit", "chat", {**chat_body(), "n": 2, "temperature": 0, "top_p": 1, "seed": 7}),
    ("content parts", "chat", _user([{"type": "text", "text": "hi"}])),
    ("assistant tool call turn", "chat", {"model": "auto", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c"}]}),
    ("surrogate pair (an emoji)", "chat", _user("\U0001F600")),
    ("token id prompt", "completions", {"model": "auto", "prompt": [1, 2, 3]}),
    ("unknown sampler passes through", "chat", {**chat_body(), "top_k": 5}),
    ("max_tokens fitting only the bigger target", "chat", {**chat_body(), "max_tokens": 3000}),
]


@pytest.mark.parametrize("name,path,body", VALID, ids=[c[0] for c in VALID])
async def test_valid_requests_pass(name, path, body) -> None:
    rig = Rig()
    async with rig.http() as http:
        r = await http.post(f"/v1/{'chat/completions' if path == 'chat' else 'completions'}", json=body)
    assert r.status_code == 200, r.text
    if name.startswith("max_tokens"):
        assert r.headers["x-router-target"] == "big"  # 'small' has 2048 tokens of context
    if name.startswith("unknown sampler"):
        assert rig.fakes["small"].calls[0][1]["top_k"] == 5


async def test_after_100_malformed_requests_a_valid_one_is_answered_at_once() -> None:
    rig = Rig()
    bad = [{**chat_body(), "temperature": "hot"}, _user(None), {**chat_body(), "n": 1000},
           {**chat_body(), "max_tokens": 10**9}]
    async with rig.http() as http:
        for i in range(100):
            r = await http.post("/v1/chat/completions", json=bad[i % len(bad)])
            assert r.status_code == 400
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200 and r.headers["x-router-target"] == "small"
    assert all(rig.view.state(t) == "healthy" for t in ("small", "big", "api"))


def _tool_rig(limits: LimitsConfig | None = None) -> tuple[RouterService, dict[str, FakeTarget]]:
    ts = [Target(id="small", kind="local", input_price_per_mtok=0.1, output_price_per_mtok=0.2,
                 latency=LatencyPrior(ttft_ms=300, tpot_ms=40)),
          Target(id="tooly", kind="local", input_price_per_mtok=0.5, output_price_per_mtok=1.0,
                 latency=LatencyPrior(ttft_ms=300, tpot_ms=40), supports_tools=True)]
    fakes = {t.id: FakeTarget(t.id) for t in ts}
    view = LiveView(ts, LatencyEstimator(ts), PriorQuality())
    return RouterService(ts, fakes, FitPolicy(), view, limits=limits), fakes


async def test_tool_requests_go_only_to_targets_that_support_tools() -> None:
    service, fakes = _tool_rig()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(lambda: service)),
                                 base_url="http://r") as http:
        r = await http.post("/v1/chat/completions", json={**chat_body(), "tools": tools})
        assert r.status_code == 200 and r.headers["x-router-target"] == "tooly"
        r = await http.post("/v1/chat/completions", json={**chat_body(), "tools": tools, "tool_choice": "none"})
        assert r.status_code == 200 and r.headers["x-router-target"] == "small"
        r = await http.post("/v1/chat/completions", json={**chat_body(model="small"), "tools": tools})
        assert r.status_code == 400 and r.json()["error"]["code"] == "tools_not_supported"
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-router-target"] == "small"
    assert [b.get("tools") for _, b in fakes["tooly"].calls] == [tools]


async def test_max_n_is_configurable() -> None:
    service, _ = _tool_rig(LimitsConfig(max_n=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(lambda: service)),
                                 base_url="http://r") as http:
        assert (await http.post("/v1/chat/completions", json={**chat_body(), "n": 2})).status_code == 200
        r = await http.post("/v1/chat/completions", json={**chat_body(), "n": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "limits.max_n" in r.json()["error"]["message"]


def test_supports_tools_is_config_driven() -> None:
    import pydantic

    from deployments.local_config import LocalModelConfig
    from deployments.provider import ProviderConfig

    with pytest.raises(pydantic.ValidationError, match="enable_auto_tool_choice"):
        LocalModelConfig(id="m", source="x", supports_tools=True)  # the engine would refuse every tool call
    kw = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}
    assert LocalModelConfig(id="m", source="x", supports_tools=True, engine_kwargs=kw).target().supports_tools
    assert not LocalModelConfig(id="m", source="x").target().supports_tools
    prov = ProviderConfig(id="p", base_url="http://x", model="m", api_key_env="K")
    assert prov.target().supports_tools
    assert not prov.model_copy(update={"supports_tools": False}).target().supports_tools


async def test_starting_models_answer_503_with_retry_after() -> None:
    rig = Rig()
    for t in ("small", "big", "api"):  # what the replica poll pushes before any engine ran
        rig.view.set_starting(t, True)
        rig.view.set_health(t, False)
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and r.json()["error"]["code"] == "router_starting"
        assert r.headers["retry-after"] == "10" and "starting" in r.json()["error"]["message"]
        r = await http.post("/v1/chat/completions", json=chat_body(model="big"))
        assert r.status_code == 503 and r.headers["retry-after"] == "10"
        h = await http.get("/healthz")
        assert h.json()["status"] == "starting" and h.headers["retry-after"] == "10"
        assert {m["state"] for m in (await http.get("/v1/models")).json()["data"][1:]} == {"starting"}
        for t in ("small", "big", "api"):  # up, then down again: "down", no Retry-After
            rig.view.set_starting(t, False)
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_target"
        assert "retry-after" not in r.headers
