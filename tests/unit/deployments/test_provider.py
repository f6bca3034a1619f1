"""ProviderClient over httpx.MockTransport: payload rewriting, retries, Retry-After, deadlines, streams."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from router.errors import (
    BadGateway,
    BadRequest,
    NoHealthyTarget,
    StreamInterrupted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from tests.unit.deployments.provider_fakes import (
    KEY,
    USAGE_CHUNK,
    Harness,
    chunk,
    ok_json,
    raises,
    sse,
    sse_response,
    status,
)

CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}], "routing": {"min_quality": 0.5}}


async def collect(h: Harness, body: dict | None = None) -> list[dict]:
    return [c async for c in h.client.stream("chat", body or CHAT)]


# -- payload and relabelling ----------------------------------------------------------------------
async def test_complete_sends_provider_model_and_reports_target_id():
    h = Harness([ok_json])
    out = await h.client.complete("chat", {**CHAT, "stream": False})
    sent = h.bodies[0]
    assert sent["model"] == "provider-model-1" and "routing" not in sent and "stream" not in sent
    assert out["model"] == "gpt-x" and out["usage"]["total_tokens"] == 4
    assert h.requests[0].url == "https://provider.test/v1/chat/completions"
    assert h.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_completions_endpoint_path_and_extra_headers():
    h = Harness([ok_json], headers={"OpenAI-Organization": "org-1"})
    await h.client.complete("completions", {"model": "gpt-x", "prompt": "hi"})
    assert h.requests[0].url.path == "/v1/completions"
    assert h.requests[0].headers["openai-organization"] == "org-1"


async def test_unknown_endpoint_is_bad_request():
    h = Harness([ok_json])
    with pytest.raises(BadRequest):
        await h.client.complete("embeddings", CHAT)
    assert h.requests == []


async def test_stream_asks_for_usage_and_relabels_chunks():
    h = Harness([sse_response(sse(chunk("a"), chunk("b"), USAGE_CHUNK))])
    chunks = await collect(h, {**CHAT, "stream_options": {"foo": 1}})
    sent = h.bodies[0]
    assert sent["stream"] is True and sent["stream_options"] == {"foo": 1, "include_usage": True}
    assert [c["model"] for c in chunks] == ["gpt-x"] * 3
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert h.client.state == "closed"


async def test_sse_comments_multiline_and_crlf():
    payload = (
        b': keep-alive\r\n\r\nevent: message\r\ndata: {"choices": [],\r\ndata:  "x": 1}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    h = Harness([sse_response(payload)])
    chunks = await collect(h)
    assert chunks == [{"choices": [], "x": 1, "model": "gpt-x"}]


# -- retries --------------------------------------------------------------------------------------
async def test_5xx_is_retried_with_full_jitter_then_succeeds():
    h = Harness([status(503), status(500), ok_json])
    out = await h.client.complete("chat", CHAT)
    assert out["model"] == "gpt-x" and len(h.requests) == 3
    base = h.config.retry.backoff_base_s
    assert len(h.sleeps) == 2
    assert 0 <= h.sleeps[0] <= base and 0 <= h.sleeps[1] <= 2 * base


@pytest.mark.parametrize(
    ("responses", "error", "http_status"),
    [
        ([status(500)], BadGateway, 502),
        ([status(502)], BadGateway, 502),
        ([raises(httpx.ConnectError("refused"))], BadGateway, 502),
        ([raises(httpx.RemoteProtocolError("reset"))], BadGateway, 502),
        ([raises(httpx.ConnectTimeout("slow"))], UpstreamTimeout, 504),
        ([raises(httpx.ReadTimeout("slow"))], UpstreamTimeout, 504),
        ([status(429)], UpstreamRateLimited, 503),
        ([lambda r: httpx.Response(200, text="not json")], BadGateway, 502),
    ],
)
async def test_retryable_failures_exhaust_retries_and_map(responses, error, http_status):
    h = Harness(responses, retry={"max_retries": 2})
    with pytest.raises(error) as info:
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 3 and len(h.sleeps) == 2
    assert info.value.status == http_status and info.value.retryable
    assert "gpt-x" in info.value.message and "3 attempts" in info.value.message


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
async def test_4xx_is_rejected_without_retry(code):
    h = Harness([status(code)])
    with pytest.raises(UpstreamRejected) as info:
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 1 and h.sleeps == []
    assert info.value.status == 502 and not info.value.retryable
    assert f"HTTP {code}" in info.value.message


async def test_rejection_names_provider_code_but_not_its_free_text():
    text = f"prompt too long; your key {KEY} said hi"
    body = {"error": {"message": text, "code": "context_length_exceeded"}}
    h = Harness([status(400, body=body)])
    with pytest.raises(UpstreamRejected) as info:
        await h.client.complete("chat", CHAT)
    assert "context_length_exceeded" in info.value.message
    assert "prompt too long" not in info.value.message and KEY not in info.value.message


# -- Retry-After and the deadline -----------------------------------------------------------------
async def test_429_retry_after_seconds_is_honoured():
    h = Harness([status(429, retry_after="1.5"), ok_json])
    await h.client.complete("chat", CHAT)
    assert h.sleeps == [1.5]


async def test_429_retry_after_http_date_is_honoured():
    h = Harness([status(429, retry_after="Tue, 14 Nov 2023 22:13:23 GMT"), ok_json])
    h.wall = 1_700_000_000.0  # = Tue, 14 Nov 2023 22:13:20 GMT
    await h.client.complete("chat", CHAT)
    assert h.sleeps == [pytest.approx(3.0)]


async def test_retry_after_beyond_deadline_fails_at_once():
    h = Harness([status(429, retry_after="8")], timeouts={"total_s": 5})
    with pytest.raises(UpstreamRateLimited) as info:
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 1 and h.sleeps == []
    assert info.value.headers == {"Retry-After": "8"} and info.value.retryable


async def test_retry_after_beyond_configured_max_fails_at_once():
    h = Harness([status(429, retry_after="30")], retry={"retry_after_max_s": 10})
    with pytest.raises(UpstreamRateLimited):
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 1 and h.sleeps == []


async def test_no_backoff_sleeps_past_the_deadline():
    def slow_500(request):
        h.clock.advance(4.9)  # the attempt itself used most of the budget
        return status(500)

    h = Harness([slow_500], timeouts={"total_s": 5}, retry={"backoff_base_s": 1, "max_retries": 5})
    with pytest.raises(BadGateway) as info:
        await h.client.complete("chat", CHAT)
    assert "deadline" in info.value.message
    assert all(s < 0.1 for s in h.sleeps)  # only 0.1 s was left after the first attempt


async def test_attempt_running_past_the_deadline_maps_to_timeout():
    async def hang(request):
        await asyncio.sleep(5)
        return ok_json(request)

    h = Harness([hang], timeouts={"total_s": 0.2}, retry={"max_retries": 0})
    with pytest.raises(UpstreamTimeout) as info:
        await h.client.complete("chat", CHAT)
    assert info.value.status == 504 and len(h.requests) == 1


# -- streams --------------------------------------------------------------------------------------
async def test_stream_failure_before_first_chunk_is_retried():
    h = Harness([status(500), sse_response(b"", fail_after=b""), sse_response(sse(chunk("a"), USAGE_CHUNK))])
    chunks = await collect(h)
    assert len(h.requests) == 3 and len(chunks) == 2


async def test_stream_failure_before_first_chunk_stays_retryable_after_retries():
    h = Harness([status(503)])
    with pytest.raises(BadGateway) as info:
        await collect(h)
    assert info.value.retryable and len(h.requests) == 3


async def test_reset_mid_stream_is_not_retried():
    h = Harness([sse_response(b"", fail_after=sse(chunk("a"), done=False)), ok_json])
    got = []
    with pytest.raises(StreamInterrupted) as info:
        async for c in h.client.stream("chat", CHAT):
            got.append(c)
    assert len(got) == 1 and len(h.requests) == 1
    assert info.value.retryable is False and info.value.status == 502


@pytest.mark.parametrize(
    "payload",
    [
        sse(chunk("a"), 'data: {"choices": [{"delta": {"cont\n\n', done=False),  # broken line
        sse(chunk("a"), done=False),  # ends without [DONE]
        sse(chunk("a"), {"error": {"message": "overloaded"}}, done=False),  # provider error event
    ],
)
async def test_broken_stream_mid_way_raises_non_retryable(payload):
    h = Harness([sse_response(payload)])
    got = []
    with pytest.raises(StreamInterrupted):
        async for c in h.client.stream("chat", CHAT):
            got.append(c)
    assert len(got) == 1 and len(h.requests) == 1
    assert h.client.breaker.snapshot()["consecutive_failures"] == 1


async def test_stream_broken_first_line_is_retried():
    h = Harness([sse_response(b"data: {oops\n\n"), sse_response(sse(chunk("a")))])
    assert len(await collect(h)) == 1 and len(h.requests) == 2


async def test_abandoned_stream_releases_half_open_probe():
    h = Harness([sse_response(sse(chunk("a"), chunk("b")))], breaker={"failure_threshold": 1, "open_s": 1})
    h.client.breaker.record_failure()
    h.clock.advance(2)
    agen = h.client.stream("chat", CHAT)
    await agen.__anext__()
    await agen.aclose()  # caller went away: neither success nor failure
    assert h.client.state == "half_open" and h.client.breaker.acquire()


# -- breaker in the client ------------------------------------------------------------------------
async def test_open_breaker_fails_fast_and_recovers_after_probe():
    h = Harness([status(500), status(500), ok_json], retry={"max_retries": 0},
                breaker={"failure_threshold": 2, "open_s": 10})
    for _ in range(2):
        with pytest.raises(BadGateway):
            await h.client.complete("chat", CHAT)
    assert not h.client.healthy and h.client.health()["state"] == "open"
    with pytest.raises(NoHealthyTarget) as info:
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 2 and info.value.status == 503 and info.value.retryable
    h.clock.advance(10)
    assert h.client.healthy and h.client.state == "half_open"
    await h.client.complete("chat", CHAT)
    assert h.client.state == "closed"


async def test_breaker_opening_mid_retry_stops_the_loop_with_the_real_error():
    h = Harness([status(500)], retry={"max_retries": 5}, breaker={"failure_threshold": 2})
    with pytest.raises(BadGateway):
        await h.client.complete("chat", CHAT)
    assert len(h.requests) == 2 and h.client.state == "open"


async def test_plain_4xx_does_not_open_breaker_but_401_counts():
    h = Harness([status(400)], breaker={"failure_threshold": 1})
    with pytest.raises(UpstreamRejected):
        await h.client.complete("chat", CHAT)
    assert h.client.state == "closed"
    h = Harness([status(401)], breaker={"failure_threshold": 1})
    with pytest.raises(UpstreamRejected):
        await h.client.complete("chat", CHAT)
    assert h.client.state == "open"
