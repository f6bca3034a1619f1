"""What real clients send (issue 12), against a live Serve app on fake engines: every reproduction gets
its 4xx with an OpenAI-style body naming the field, no target is ever marked down by a client's mistake,
a valid request right after 100 malformed ones is answered at once, streams follow OpenAI's usage rule,
and a fuzzer driven by the app's own OpenAPI document (thousands of cases) finds no 5xx.

The reproductions that need the real engine's validation run in tests/integration/test_client_errors_vllm.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.harness import chat, deploy, is_openai_error, model, ray_serve, record
from tests.support.logs import assert_text_not_logged

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8250
BASE = f"http://127.0.0.1:{PORT}"
SECRET = "MY SECRET PROMPT 7f3a"  # must never reach an error body or a log file
IDS = ["small-a", "small-b"]


def app_config() -> dict[str, Any]:
    return {
        "models": [model("small-a", 0.01, 0.5, ctx=512), model("small-b", 0.02, 0.6, ctx=1024)],
        "limits": {"request_timeout_s": 20},
        "ingress": {"replica_poll_s": 0.5},
    }


@pytest.fixture(scope="module")
def live():
    with ray_serve(PORT) as tmp:
        prefix = deploy("clienterr", app_config())
        yield BASE + prefix, tmp


def _states(base: str) -> dict[str, str]:
    return httpx.get(base + "/healthz", timeout=10).json()["targets"]


def _user(content: Any, **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **kw}


# (issue item, endpoint, body (dict or raw bytes), status, code, param)
REPRODUCTIONS: list[tuple[str, str, Any, int, str | None, str | None]] = [
    ("1 temperature hot", "chat", chat(SECRET, max_tokens=3, temperature="hot"), 400, None, "temperature"),
    ("1 content null", "chat", _user(None, max_tokens=3), 400, None, "messages[0].content"),
    ("1 lone surrogate", "chat", b'{"model":"auto","messages":[{"role":"user","content":"\\ud800"}],"max_tokens":3}',
     400, "invalid_unicode", "messages[0].content"),
    ("1 empty completion prompt", "completions", {"model": "auto", "prompt": "", "max_tokens": 3}, 400, None,
     "prompt"),
    ("2 deep nesting", "chat", b"[" * 100_000 + b"]" * 100_000, 400, "nesting_too_deep", None),
    ("4 n=1000", "chat", chat(SECRET, n=1000, max_tokens=3), 400, None, "n"),
    ("6 unknown allowed target", "chat", chat(SECRET, routing={"allowed_targets": ["nope-9"]}), 400,
     "model_not_found", "routing.allowed_targets"),
    ("7 secret in a content part", "chat", _user([{"type": "text", "txt": SECRET}]), 400, None, None),
    ("8 tools without support", "chat", chat(SECRET, tools=[{"type": "function", "function": {"name": "f"}}]),
     400, "tools_not_supported", "tools"),
    ("8 temperature 5", "chat", chat(SECRET, temperature=5), 400, None, "temperature"),
    ("8 n=0", "chat", chat(SECRET, n=0), 400, None, "n"),
    ("8 max_tokens 1e9", "chat", chat(SECRET, max_tokens=1e9), 400, None, "max_tokens"),
    ("8 max_tokens 10**9", "chat", chat(SECRET, max_tokens=10**9), 400, "context_length_exceeded", "max_tokens"),
]


def _post(base: str, endpoint: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    return httpx.post(base + path, content=content, headers={"content-type": "application/json"}, timeout=30)


@pytest.mark.parametrize("name,endpoint,body,status,code,param", REPRODUCTIONS, ids=[r[0] for r in REPRODUCTIONS])
def test_reproduction(live, name, endpoint, body, status, code, param):
    base, _ = live
    r = _post(base, endpoint, body)
    assert r.status_code == status, r.text[:300]
    data = r.json()
    assert is_openai_error(data), r.text[:300]
    assert data["error"]["type"] == "invalid_request_error"
    if code:
        assert data["error"]["code"] == code, r.text[:300]
    if param:
        assert data["error"].get("param") == param, r.text[:300]
        assert param.split("[")[0] in data["error"]["message"]
    assert SECRET not in r.text and "input_value" not in r.text


def test_100_malformed_requests_then_a_valid_one_is_answered_at_once(live):
    base, _ = live
    for i in range(100):
        _, endpoint, body, status, _, _ = REPRODUCTIONS[i % len(REPRODUCTIONS)]
        assert _post(base, endpoint, body).status_code == status
    assert set(_states(base).values()) == {"healthy"}
    t0 = time.monotonic()
    r = httpx.post(base + "/v1/chat/completions", json=chat("hello", max_tokens=3), timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
    assert took < 5, took
    record("100 malformed requests, then a valid one", {"sent": 101, "answered": 1, "errored": 100, "lost": 0},
           valid_answer_s=round(took, 3))


def test_stream_usage_chunk_only_when_asked(live):
    from openai import OpenAI

    base, _ = live
    client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    msgs = [{"role": "user", "content": "count"}]
    text = ""
    for chunk in client.chat.completions.create(model="small-a", messages=msgs, max_tokens=4, stream=True):
        text += chunk.choices[0].delta.content or ""  # the usual loop: no `choices: []` chunk to trip it
        assert chunk.usage is None
    assert text.split() == ["one", "two", "three", "four"]
    chunks = list(client.chat.completions.create(model="small-a", messages=msgs, max_tokens=4, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


def test_prompt_text_never_logged(live):
    base, tmp = live
    for _, endpoint, body, _, _, _ in REPRODUCTIONS:
        _post(base, endpoint, body)
    time.sleep(2)  # let log lines flush
    assert_text_not_logged(tmp, SECRET)


# -- fuzz from the app's own OpenAPI document --------------------------------------------------------------
def _strategies(doc: dict[str, Any]) -> dict[str, st.SearchStrategy[Any]]:
    from tests.support.schema_strategy import SchemaStrategies

    ops = {path: doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
           for path in ("/v1/chat/completions", "/v1/completions")}
    # Real clients name real targets and ask for short answers: mix those in so that a good share of
    # the cases gets past validation to a target.
    s = SchemaStrategies(doc["components"]["schemas"], overrides={
        "model": st.sampled_from(["auto", *IDS]),
        "max_tokens": st.integers(min_value=1, max_value=32),
    })
    out = {}
    for path, ref in ops.items():
        name = ref.rsplit("/", 1)[-1]
        out[path] = s.valid(name) | s.mutated(name)
    return out


def _judge(r: httpx.Response, statuses: dict[int, int]) -> None:
    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code == 200:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text, r.text[-300:]
        else:
            assert r.json().get("choices") is not None
    else:
        assert is_openai_error(r.json()), r.text[:300]


def _fuzz(client: httpx.Client, doc: dict[str, Any], n: int) -> dict[int, int]:
    strategies = _strategies(doc)
    statuses: dict[int, int] = {}

    @settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
              database=None)
    @given(data=st.data(), path=st.sampled_from(sorted(strategies)))
    def run(data: Any, path: str) -> None:
        body = data.draw(strategies[path])
        r = client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        _judge(r, statuses)

    run()
    return statuses


def test_openapi_documents_the_request_bodies(live):
    base, _ = live
    doc = httpx.get(base + "/openapi.json", timeout=10).json()
    for path, name in (("/v1/chat/completions", "ChatRequest"), ("/v1/completions", "CompletionRequest")):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/" + name)
        schema = doc["components"]["schemas"][name]
        assert {"model", "max_tokens", "temperature", "n", "stream", "routing"} <= set(schema["properties"])
    assert {"messages"} <= set(doc["components"]["schemas"]["ChatRequest"]["required"])


def test_fuzz_from_openapi_live(live):
    """Thousands of schema-driven bodies (half conforming, half with one defect) against the live endpoint."""
    base, _ = live
    doc = httpx.get(base + "/openapi.json", timeout=10).json()
    with httpx.Client(base_url=base, timeout=30) as client:
        statuses = _fuzz(client, doc, 2000)
    n = sum(statuses.values())
    states = _states(base)
    record("fuzz from the app's OpenAPI (live, fake engines)",
           {"sent": n, "answered": statuses.get(200, 0), "errored": n - statuses.get(200, 0), "lost": 0},
           statuses={str(k): v for k, v in statuses.items()}, target_states=states)
    assert n >= 2000 and statuses.get(200, 0) > 200 and statuses.get(400, 0) > 200, statuses
    assert set(states.values()) == {"healthy"}, states


def test_fuzz_from_openapi_in_process():
    """The same fuzz in-process (make_app over fake clients, no Ray): more cases, quickly."""
    from starlette.testclient import TestClient

    from router.api import make_app
    from router.config import AppConfig
    from router.ingress import build_service
    from tests.unit.router.fakes import FakeTarget

    service = build_service(AppConfig.model_validate(app_config()), {t: FakeTarget(t) for t in IDS})
    app = make_app(lambda: service)
    with TestClient(app, raise_server_exceptions=True) as client:
        statuses = _fuzz(client, app.openapi(), 2000)  # type: ignore[arg-type]
    assert sum(statuses.values()) >= 2000 and statuses.get(200, 0) > 200, statuses
    assert {service.view.state(t) for t in IDS} == {"healthy"}
