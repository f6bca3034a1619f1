"""ProviderClient with its real httpx transport against the fake provider on 127.0.0.1 (no Ray).

Also checks with the official `openai` client that the fake speaks the protocol other tests rely on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import openai
import pytest

from deployments.provider import ProviderClient, ProviderConfig
from router.errors import (
    BadGateway,
    NoHealthyTarget,
    StreamInterrupted,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from tests.support.fake_openai import FakeOpenAI, fake_openai_subprocess

pytestmark = pytest.mark.timeout(60)
KEY = "sk-fake-integration-SECRET"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "say something nice"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, models=("provider-model",)) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh(server: FakeOpenAI) -> None:
    server.clear()
    server.mode = "ok"
    server.set_latency(0.0, 0.0)


def client(base_url: str, **cfg) -> ProviderClient:
    config = ProviderConfig(
        id="gpt-x", base_url=base_url, model="provider-model", api_key_env="FAKE_KEY",
        retry={"backoff_base_s": 0.01, "backoff_max_s": 0.05, **cfg.pop("retry", {})}, **cfg,
    )
    return ProviderClient(config, KEY)


async def drain(c: ProviderClient, got: list | None = None) -> list[dict]:
    got = [] if got is None else got
    async for chunk in c.stream("chat", CHAT):
        got.append(chunk)
    return got


# -- the fake speaks OpenAI -----------------------------------------------------------------------
def test_openai_sdk_against_the_fake(server: FakeOpenAI):
    sdk = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=10)
    hello = [{"role": "user", "content": "a b c"}]
    resp = sdk.chat.completions.create(model="provider-model", messages=hello)
    assert resp.choices[0].message.content and resp.usage.prompt_tokens == 3
    assert resp.usage.completion_tokens == len(resp.choices[0].message.content.split())
    chunks = list(sdk.chat.completions.create(model="provider-model", max_tokens=4, stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "hi"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 4 and chunks[-1].usage.completion_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "length"
    comp = sdk.completions.create(model="provider-model", prompt="one two", max_tokens=2)
    assert comp.usage.total_tokens == 4 and len(comp.choices[0].text.split()) == 2
    assert [m.id for m in sdk.models.list()] == ["provider-model"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    server.script("429:1")
    with pytest.raises(openai.RateLimitError):
        sdk.completions.create(model="provider-model", prompt="x")


def test_fake_in_a_subprocess_is_scriptable():
    with fake_openai_subprocess(api_key="sk-sub") as remote:
        sdk = openai.OpenAI(base_url=remote.base_url, api_key="sk-sub", max_retries=0, timeout=10)
        remote.script("503")
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).usage
        assert remote.request_count == 2 and remote.requests[0].body["model"] == "m"
        proc = remote.process
    assert proc is not None and proc.poll() is not None


# -- ProviderClient over real HTTP ----------------------------------------------------------------
async def test_complete_and_stream(server: FakeOpenAI):
    async with client(server.base_url) as c:
        out = await c.complete("chat", CHAT)
        chunks = await drain(c)
    assert out["model"] == "gpt-x" and out["usage"] == {"prompt_tokens": 3, "completion_tokens": 5,
                                                        "total_tokens": 8}
    assert all(ch["model"] == "gpt-x" for ch in chunks) and chunks[-1]["usage"]["completion_tokens"] == 5
    sent = [r.body for r in server.requests]
    assert [b["model"] for b in sent] == ["provider-model"] * 2
    assert sent[1]["stream_options"] == {"include_usage": True}
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_ttft_is_real(server: FakeOpenAI):
    server.set_latency(ttft_s=0.2, token_delay_s=0.01)
    async with client(server.base_url) as c:
        start = time.monotonic()
        agen = c.stream("chat", CHAT)
        await agen.__anext__()
        assert time.monotonic() - start >= 0.2
        await agen.aclose()


async def test_5xx_then_success_retries(server: FakeOpenAI):
    server.script("500", "503")
    async with client(server.base_url) as c:
        assert (await c.complete("chat", CHAT))["choices"]
    assert server.request_count == 3


async def test_429_waits_for_retry_after(server: FakeOpenAI):
    server.script("429:1")
    async with client(server.base_url) as c:
        start = time.monotonic()
        await c.complete("chat", CHAT)
    assert time.monotonic() - start >= 1.0 and server.request_count == 2


async def test_429_longer_than_we_may_wait_fails_at_once(server: FakeOpenAI):
    server.script("429:30")
    async with client(server.base_url, timeouts={"total_s": 5}) as c:
        start = time.monotonic()
        with pytest.raises(UpstreamRateLimited) as info:
            await c.complete("chat", CHAT)
    assert time.monotonic() - start < 1.0 and server.request_count == 1
    assert info.value.headers["Retry-After"] == "30"


async def test_hang_times_out_after_bounded_retries(server: FakeOpenAI):
    server.mode = "hang:10"
    async with client(server.base_url, timeouts={"read_s": 0.3}, retry={"max_retries": 1}) as c:
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await c.complete("chat", CHAT)
    assert time.monotonic() - start < 2.0 and server.request_count == 2


async def test_total_deadline_bounds_a_hang(server: FakeOpenAI):
    server.mode = "hang:10"
    async with client(server.base_url, timeouts={"read_s": 5, "total_s": 0.5}) as c:
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await drain(c)
    assert time.monotonic() - start < 1.5


async def test_connection_reset_is_retried_then_bad_gateway(server: FakeOpenAI):
    server.mode = "reset"
    async with client(server.base_url) as c:
        with pytest.raises(BadGateway) as info:
            await c.complete("chat", CHAT)
    assert server.request_count == 3 and info.value.retryable


async def test_connection_refused_is_bad_gateway():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}/v1") as c:
        with pytest.raises(BadGateway):
            await c.complete("chat", CHAT)


@pytest.mark.parametrize("mode", ["broken:3", "cut:3", "stall:3:5"])
async def test_stream_failing_mid_way_is_not_retried(server: FakeOpenAI, mode: str):
    server.mode = mode
    got: list[dict] = []
    async with client(server.base_url, timeouts={"read_s": 0.3}) as c:
        with pytest.raises(StreamInterrupted) as info:
            await drain(c, got)
    assert len(got) == 3 and server.request_count == 1 and info.value.retryable is False


async def test_stream_reset_before_first_chunk_is_retried(server: FakeOpenAI):
    server.script("reset", "broken:0")
    async with client(server.base_url) as c:
        chunks = await drain(c)
    assert chunks[-1]["usage"] and server.request_count == 3


async def test_breaker_opens_and_fails_fast(server: FakeOpenAI):
    server.mode = "500"
    async with client(server.base_url, retry={"max_retries": 0}, breaker={"failure_threshold": 2}) as c:
        for _ in range(2):
            with pytest.raises(BadGateway):
                await c.complete("chat", CHAT)
        assert not c.healthy and c.health()["state"] == "open"
        with pytest.raises(NoHealthyTarget):
            await c.complete("chat", CHAT)
    assert server.request_count == 2


async def test_key_not_in_logs_over_real_http(server: FakeOpenAI, caplog):
    caplog.set_level(logging.DEBUG)
    server.script("500", "429:1", "401")
    async with client(server.base_url, retry={"max_retries": 1}) as c:
        for _ in range(2):
            with pytest.raises(Exception) as info:
                await c.complete("chat", CHAT)
            assert KEY not in str(info.value) and "SECRET" not in repr(info.value)
    assert "SECRET" not in caplog.text and "attempt 1 failed" in caplog.text
