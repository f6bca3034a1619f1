"""Execution: failover before the first token, mid-stream errors, feedback to the live view, cascade."""

from __future__ import annotations

import asyncio
import json

import pytest

from router.errors import BadGateway, UpstreamTimeout
from router.limits import LimitsConfig
from tests.unit.router.fakes import CascadePolicy, FakeTarget, Rig, chat_body


class DeadReplica(RuntimeError):
    """Stands in for Ray's ActorDiedError: not a RouterError at all."""


def _fakes(**over: FakeTarget) -> dict[str, FakeTarget]:
    return {t: over.get(t) or FakeTarget(t) for t in ("small", "big", "api")}


async def test_dead_replica_before_first_token_fails_over_to_alternate() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", fail_first=1, error=DeadReplica("actor died"))))
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-router-target"] == "big"
    assert raw.headers["x-router-reason"] == "cheapest-fit+failover"
    assert raw.parse().model == "big"
    assert rig.metrics.fallbacks[("small", "big", "error")] == 1
    assert rig.estimator.error_rate("small") > 0 and rig.estimator.in_flight("small") == 0


async def test_stream_failover_before_first_chunk() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", fail_first=1, error=BadGateway("502 from engine"))))
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-router-target"] == "big"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "hello from the fake"


async def test_timeout_before_first_token_fails_over() -> None:
    # request_timeout_s is the request's whole deadline; the attempt limit (floor here) moves it on.
    limits = LimitsConfig(request_timeout_s=5, attempt_timeout_floor_s=0.1, attempt_timeout_factor=0.001)
    rig = Rig(_fakes(small=FakeTarget("small", delay_s=2)), limits=limits)
    r = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.headers["x-router-target"] == "big"


async def test_alternates_are_bounded() -> None:
    err = UpstreamTimeout("slow")
    fakes = {t: FakeTarget(t, fail_first=5, error=err) for t in ("small", "big", "api")}
    rig = Rig(fakes, limits=LimitsConfig(max_alternates=1))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 504
    assert [len(f.calls) for f in fakes.values()] == [1, 1, 0]


async def test_error_after_tokens_ends_stream_with_error_event_and_done() -> None:
    # stream_failover "error": the pre-issue-16 behaviour (continuation: tests/unit/router/test_continuation.py)
    rig = Rig(_fakes(small=FakeTarget("small", fail_after=2, error=DeadReplica("gone"))),
              limits=LimitsConfig(stream_failover="error"))
    async with rig.http() as http:
        r = await asyncio.wait_for(http.post("/v1/chat/completions", json=chat_body(stream=True)), 5)
    assert r.status_code == 200 and r.headers["x-router-target"] == "small"
    events = [e[6:] for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])
    assert err["error"]["code"] == "upstream_stream_interrupted" and set(err["error"]) == {
        "message", "type", "code"}
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-2]] == ["hello", " from"]
    assert not rig.fakes["big"].calls  # never retried once tokens went out
    assert rig.estimator.error_rate("small") > 0 and rig.estimator.in_flight("small") == 0
    assert rig.metrics.requests[("small", "chat", "stream_error")] == 1


async def test_openai_client_sees_mid_stream_error() -> None:
    import openai

    rig = Rig(_fakes(small=FakeTarget("small", fail_after=1)), limits=LimitsConfig(stream_failover="error"))
    stream = await rig.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_observations_feed_the_latency_estimator() -> None:
    rig = Rig()
    client = rig.openai()
    small = rig.targets[0]
    cold_ttft, cold_e2e = rig.estimator.predict(small, 10, 4)
    for _ in range(8):
        await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    stream = await client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "x"}], stream=True
    )
    async for _ in stream:
        pass
    # the fakes answer in well under the 300 ms / 40 ms-per-token prior: the estimate has learnt that
    ttft, e2e = rig.estimator.predict(small, 10, 4)
    assert ttft < cold_ttft / 3 and e2e < cold_e2e / 3
    assert rig.estimator.in_flight("small") == 0 and rig.estimator.error_rate("small") == 0
    assert len(rig.metrics.e2e_ms["small"]) == 9 and len(rig.metrics.ttft_ms["small"]) == 1
    assert rig.metrics.requests[("small", "chat", "ok")] == 9


async def test_in_flight_counted_while_running() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", delay_s=0.2)))
    async with rig.http() as http:
        task = asyncio.create_task(http.post("/v1/chat/completions", json=chat_body()))
        await asyncio.sleep(0.1)
        assert rig.estimator.in_flight("small") == 1
        await task
    assert rig.estimator.in_flight("small") == 0


async def test_consecutive_errors_cool_target_down_then_probe() -> None:
    now = [0.0]
    fakes = _fakes(small=FakeTarget("small", fail_first=3))
    rig = Rig(fakes, clock=lambda: now[0])
    async with rig.http() as http:
        for _ in range(3):
            r = await http.post("/v1/chat/completions", json=chat_body())
            assert r.headers["x-router-target"] == "big"
        assert rig.view.state("small") == "cooling_down"
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-router-target"] == "big" and len(fakes["small"].calls) == 3
        now[0] = 31.0  # after the cool-down the next request probes it (and it has recovered)
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-router-target"] == "small"


async def test_health_callback_marks_target_down() -> None:
    rig = Rig()
    breaker_open = {"small": True}
    rig.view.add_health_check("small", lambda: not breaker_open["small"])
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-router-target"] == "big"
        breaker_open["small"] = False
        r = await http.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-router-target"] == "small"


async def test_usage_estimated_when_target_reports_none() -> None:
    fake = FakeTarget("small", answer="one two three four five six seven eight", usage=False)
    rig = Rig(_fakes(small=fake))
    resp = await rig.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert resp.usage is not None and resp.usage.completion_tokens > 0


async def test_cascade_escalates_weak_answer_and_charges_both() -> None:
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0), big=FakeTarget("big", logprob=-0.1))
    policy = CascadePolicy(threshold=-1.0)
    rig = Rig(fakes, policy=policy)
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hard"}]
    )
    assert raw.headers["x-router-target"] == "big"
    assert raw.headers["x-router-reason"] == "cheapest-fit+escalated"
    assert policy.seen == [("hello from the fake", -3.0), ("hello from the fake", -0.1)]
    assert fakes["small"].calls[0][1]["logprobs"] is True
    assert raw.parse().choices[0].logprobs is None  # not asked for by the client: stripped
    cost = float(raw.headers["x-router-cost-usd"])
    assert cost == pytest.approx((1 * 0.1 + 4 * 0.2 + 1 * 0.5 + 4 * 1.0) / 1e6, rel=1e-3)


async def test_cascade_keeps_cheap_answer_when_escalation_fails() -> None:
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0),
                   big=FakeTarget("big", fail_first=9), api=FakeTarget("api", fail_first=9))
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0))
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hard"}]
    )
    assert raw.headers["x-router-target"] == "small"


async def test_cascade_accepts_confident_answer_and_never_applies_to_streams() -> None:
    fakes = _fakes(small=FakeTarget("small", logprob=-0.2))
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0))
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "easy"}]
    )
    assert raw.headers["x-router-target"] == "small" and not fakes["big"].calls
    fakes["small"].logprob = -5.0
    stream = await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}], stream=True
    )
    async for _ in stream:
        pass
    assert not fakes["big"].calls


async def test_cascade_respects_latency_budget() -> None:
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0, delay_s=0.3))
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0))
    # small fits 5 s; after its 300 ms answer, big's predicted e2e (~600+3x80 ms x1.5) would overrun.
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hard"}], max_tokens=4,
        extra_body={"routing": {"max_latency_ms": 1200, "allow_fallback": False}},
    )
    assert raw.headers["x-router-target"] == "small" and not fakes["big"].calls


def test_router_service_validates_clients() -> None:
    from router.service import RouterService

    rig = Rig()
    with pytest.raises(ValueError, match="no client"):
        RouterService(rig.targets, {"small": FakeTarget("small")}, rig.service.policy, rig.view)


async def test_completions_endpoint_failover_and_model_rewrite() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", fail_first=1)))
    resp = await rig.openai().completions.create(model="auto", prompt="Once", max_tokens=8)
    assert resp.model == "big"
    assert rig.fakes["big"].calls[0][0] == "completions"


async def test_client_disconnect_mid_stream_releases_the_target() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", answer=" ".join(["w"] * 50))))
    chunks, headers = await rig.service.chat_stream(chat_body(stream=True), {})
    assert headers["x-router-target"] == "small"
    assert rig.estimator.in_flight("small") == 1
    first = await chunks.__anext__()
    assert first["model"] == "small"
    await chunks.aclose()  # what Starlette does when the client goes away
    assert rig.estimator.in_flight("small") == 0 and rig.estimator.error_rate("small") == 0
    assert rig.metrics.requests[("small", "chat", "cancelled")] == 1
    assert any(s.name == "POST /v1/chat/completions" for s in rig.spans())


@pytest.mark.parametrize("stream", [False, True])
async def test_queued_call_to_dead_target_fails_over_after_attempt_timeout(stream: bool) -> None:
    # A target whose only replica died does not fail: Serve queues the call until a restart. The
    # attempt limit (factor x predicted latency, at least the floor) moves the request on.
    limits = LimitsConfig(attempt_timeout_floor_s=0.2, attempt_timeout_factor=0.001, request_timeout_s=60)
    rig = Rig(_fakes(small=FakeTarget("small", delay_s=30)), limits=limits)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    assert raw.headers["x-router-target"] == "big"
    assert raw.headers["x-router-reason"] == "cheapest-fit+failover"
    assert loop.time() - t0 < 10
