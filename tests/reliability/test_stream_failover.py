"""Streams that survive a dying target (issue 16), on a real Serve app built by `router.app.build`.

Fake engines (tests/support/fake_engine.py) die mid-stream in every way a target can: the replica's
process exits after N chunks, an upstream `{"error": ...}` event, a stall past the chunk limit. The
router continues the answer on an alternate: the fake alternate picks the counting text up where the
client's copy ends, so the concatenated text must be exactly the counting text, with no word repeated
or missing. One test does the same with two real vLLM CPU engines (a replica `ray.kill`ed after N
chunks), run it alone with `-k vllm`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.reliability.harness import deploy_ready, real_model, record, replica_actors, serve_cluster, wait_until
from tests.support.fake_engine import ANSWER as ANSWER_WORDS

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8260
BASE = f"http://127.0.0.1:{PORT}"
PRICE = {"die": 0.5, "brk1": 0.55, "event": 0.6, "brk2": 0.65, "stall": 0.7, "good": 1.0}  # USD / 1M out


def _model(tid: str) -> dict[str, Any]:
    return {"id": tid, "source": "fake", "context_window": 2048, "input_price_per_mtok": 0.0,
            "output_price_per_mtok": PRICE[tid], "quality_prior": 0.5,
            "latency": {"ttft_ms": 30, "tpot_ms": 5, "max_concurrency": 64}}


cluster = serve_cluster(PORT)


@pytest.fixture(scope="module")
def app(cluster):
    cfg = {"models": [_model(t) for t in PRICE],
           "limits": {"request_timeout_s": 3, "attempt_timeout_floor_s": 2, "max_alternates": 2}}
    engines = {"die": {"die_after": 3, "token_delay_s": 0.02}, "event": {"error_event_after": 2},
               "brk1": {"error_event_after": 2}, "brk2": {"error_event_after": 1},
               "stall": {"stall_after": 2, "stall_s": 30}, "good": {"words": 15}}
    return deploy_ready("sf", cfg, engines)


def _engine(tid: str) -> dict[str, Any]:
    from ray import serve

    return serve.get_deployment_handle(f"model-{tid}", app_name="sf").stats.remote().result()


def _spent(path: str) -> float:
    return httpx.get(BASE + path + "/v1/usage", timeout=10).json()["spent_usd"]


async def _read(url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """One stream: the response and its chunks (the `[DONE]` asserted, not returned)."""
    async with httpx.AsyncClient(timeout=60) as c, c.stream("POST", url, json=body) as r:
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and events and events[-1] == "[DONE]", events[-3:]
    return r, [json.loads(e) for e in events[:-1]]


def _text(chunk: dict[str, Any]) -> str:
    ch = (chunk.get("choices") or [{}])[0]
    return (ch.get("delta") or {}).get("content") or ch.get("text") or ""


def _pieces(chunks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["model"], _text(c)) for c in chunks if _text(c)]


def counting(n: int) -> str:
    return " ".join(ANSWER_WORDS[:n])


def _stream_body(endpoint: str, allowed: list[str], max_tokens: int, usage: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "stream": True, "max_tokens": max_tokens,
                            "routing": {"allowed_targets": allowed}}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": "count for me"}]
    else:
        body["prompt"] = "count for me: "
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.mark.parametrize("endpoint, first, why", [
    ("chat", "die", "replica died"), ("completions", "event", "error event"), ("chat", "stall", "stall"),
])
def test_stream_continues_on_the_alternate(app, endpoint, first, why):
    url = BASE + app + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
    before = _spent(app)
    good0 = _engine("good")
    r, chunks = asyncio.run(_read(url, _stream_body(endpoint, [first, "good"], 10, usage=True)))
    pieces = _pieces(chunks)
    models = [m for m, _ in pieces]
    k = models.count(first)
    # one answer: the first engine's prefix, then the alternate's continuation, nothing repeated or lost
    assert 1 <= k < 10 and models == [first] * k + ["good"] * (10 - k), models
    assert "".join(t for _, t in pieces) == counting(10)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}, "one stream, one id"
    assert not any("error" in c for c in chunks)
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 10  # both calls' tokens
    assert last["usage"]["prompt_tokens"] > 0
    (switch,) = last["router"]["failover"]
    assert switch["from"] == first and switch["to"] == "good" and switch["after_chunks"] == k
    assert r.headers["x-router-target"] == first  # the headers left with the first chunk
    good = _engine("good")
    assert good["continued"] - good0["continued"] == 1  # the alternate was asked to continue, not restart
    time.sleep(0.5)
    spent = _spent(app) - before
    expected = (k * PRICE[first] + (10 - k) * PRICE["good"]) / 1e6  # input is free: output of both calls
    record(f"stream continued after '{why}' ({endpoint})", {"sent": 1, "answered": 1, "errored": 0, "lost": 0},
           first_chunks=k, continued_chunks=10 - k, spent_usd=spent, expected_usd=expected)
    assert spent == pytest.approx(expected, rel=1e-6)  # charged for both calls, each at its own price
    if first == "stall":  # the abandoned call was cancelled in the engine
        assert wait_until(lambda: _engine("stall")["cancelled"] >= 1, 10)


def test_continuation_without_usage_and_max_tokens_reduced(app):
    """No include_usage: no usage chunk, the last content chunk carries `router.failover`; the alternate
    was asked for what is left of max_tokens (it would count on to 15 otherwise)."""
    _, chunks = asyncio.run(_read(BASE + app + "/v1/chat/completions",
                                  _stream_body("chat", ["brk1", "good"], 6, usage=False)))
    assert all(c.get("choices") for c in chunks) and not any("usage" in c for c in chunks)
    assert "".join(t for _, t in _pieces(chunks)) == counting(6)
    assert chunks[-1]["router"]["failover"][0]["to"] == "good"


def test_every_alternate_failing_still_ends_with_the_error_event(app):
    async def run() -> list[list[dict[str, Any]]]:
        return [(await _read(BASE + app + "/v1/chat/completions",
                             _stream_body("chat", ["brk1", "brk2"], 10, usage=False)))[1] for _ in range(2)]

    for i, chunks in enumerate(asyncio.run(run())):
        assert chunks[-1]["error"]["code"] == "upstream_stream_interrupted"
        pieces = _pieces(chunks[:-1])
        models = [m for m, _ in pieces]
        # brk1 sent 2 words, brk2 continued with 1 then failed too, then at most one more continuation
        # (limits.max_alternates 2) failed: the error event, nothing repeated. By the second stream brk1
        # may be cooling down (3 failures in a row), and brk2 then takes the stream and its continuation.
        if i == 0:
            assert models[:3] == ["brk1", "brk1", "brk2"]
        assert set(models) <= {"brk1", "brk2"} and len(set(models)) >= 1 and len(models) <= 5
        assert len(models) > (2 if models[0] == "brk1" else 1), "it was continued before the final failure"
        assert "".join(t for _, t in pieces) == counting(len(models))
    record("every alternate fails mid-stream (2 streams)", {"sent": 2, "answered": 0, "errored": 2, "lost": 0})


# -- real vLLM CPU engines ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_app(cluster):
    from tests.reliability.harness import deploy

    models = [real_model("smollm2-135m"), real_model("gemma3-270m")]
    cfg = {"models": models, "limits": {"request_timeout_s": 120, "max_alternates": 1},
           "ingress": {"health_poll_s": 0.5, "replica_poll_s": 0.5}}
    path = deploy("sfv", cfg)

    def up() -> bool:
        try:
            t = httpx.get(BASE + path + "/healthz", timeout=10).json()["targets"]
        except Exception:
            return False
        return all(t[m["id"]] == "healthy" for m in models)

    assert wait_until(up, 900, interval=2.0)
    return path


def _kill(name: str, ns: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace=ns), no_restart=False)  # Serve restarts it later


def test_vllm_replica_killed_after_n_chunks_is_continued_by_the_other_engine(vllm_app):
    n_before_kill = 4
    body = {"model": "auto", "stream": True, "max_tokens": 40, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Write a short story about a cat who learns to fly."}]}

    async def run() -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        async with httpx.AsyncClient(timeout=300) as c, c.stream(
                "POST", BASE + vllm_app + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200 and r.headers["x-router-target"] == "smollm2-135m"
            killed = False
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunks.append(json.loads(line[6:]))
                if not killed and sum(1 for ch in chunks if _text(ch)) >= n_before_kill:
                    (name, ns), = replica_actors("sfv", "model-smollm2-135m")
                    await asyncio.to_thread(_kill, name, ns)
                    killed = True
            assert killed
        return chunks

    chunks = asyncio.run(run())
    pieces = _pieces(chunks)
    models = [m for m, _ in pieces]
    k = models.count("smollm2-135m")
    assert k >= n_before_kill and models == ["smollm2-135m"] * k + ["gemma3-270m"] * (len(models) - k), models
    assert len(models) > k, "the other engine continued the answer"
    assert not any("error" in c for c in chunks) and {c["id"] for c in chunks} == {chunks[0]["id"]}
    last = chunks[-1]
    assert last["router"]["failover"][0]["from"] == "smollm2-135m"
    assert last["router"]["failover"][0]["to"] == "gemma3-270m"
    assert last["usage"]["completion_tokens"] >= len(models) and last["usage"]["completion_tokens"] <= 40
    prefix = "".join(t for m, t in pieces if m == "smollm2-135m")
    rest = "".join(t for m, t in pieces if m == "gemma3-270m")
    record("vLLM: smollm2 replica killed after N chunks, gemma3 continued",
           {"sent": 1, "answered": 1, "errored": 0, "lost": 0}, first_chunks=k, continued_chunks=len(models) - k,
           usage=last["usage"], prefix=prefix[-80:], continuation=rest[:80])
