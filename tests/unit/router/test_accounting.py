"""Every call accounted for (in process, fake targets): abandoned calls are cancelled upstream and
charged, a stream closed before its first chunk leaves nothing open, cascade keeps and charges the cheap
answer, and an error event inside a stream ends it as an error."""

from __future__ import annotations

import json

import pytest

from router.errors import UpstreamRejected
from router.limits import LimitsConfig
from tests.unit.router.fakes import CascadePolicy, FakeTarget, Rig, chat_body


def _fakes(**over: FakeTarget) -> dict[str, FakeTarget]:
    return {t: over.get(t) or FakeTarget(t) for t in ("small", "big", "api")}


def _open_spans(rig: Rig) -> int:
    ended = {s.context.span_id for s in rig.spans()}
    return sum(1 for s in rig.spans() if s.parent is not None and s.parent.span_id not in ended)


@pytest.mark.parametrize("stream", [False, True])
async def test_attempt_timeout_cancels_upstream_and_charges_it(stream: bool) -> None:
    limits = LimitsConfig(attempt_timeout_floor_s=0.3, attempt_timeout_factor=0.001, request_timeout_s=30)
    rig = Rig(_fakes(small=FakeTarget("small", delay_s=30)), limits=limits)
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=stream))
    assert r.status_code == 200 and r.headers["x-router-target"] == "big"
    assert rig.fakes["small"].cancelled == 1  # the abandoned call saw the cancellation
    # it was charged to its own target (the prompt it had been sent at least), the answer to big
    assert rig.metrics.cost_usd["small"] > 0 and rig.metrics.cost_usd["big"] > 0
    assert rig.estimator.in_flight("small") == 0 and rig.estimator.in_flight("big") == 0
    outcomes = [s.attributes.get("router.call_outcome") for s in rig.spans() if "router.call_outcome" in s.attributes]
    assert sorted(outcomes) == ["abandoned", "ok"]
    assert _open_spans(rig) == 0
    spent = rig.service.budget.pending("anonymous")
    assert spent == pytest.approx(rig.metrics.cost_usd["small"] + rig.metrics.cost_usd["big"])


async def test_stream_closed_before_first_chunk_is_read_leaves_nothing_open() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", answer=" ".join(["w"] * 50))))
    chunks, headers = await rig.service.chat_stream(chat_body(stream=True), {})
    assert rig.estimator.in_flight("small") == 1
    await chunks.aclose()  # never iterated: what a client gone before the first chunk leaves
    assert rig.estimator.in_flight("small") == 0
    assert rig.fakes["small"].cancelled == 1
    assert rig.metrics.requests[("small", "chat", "cancelled")] == 1
    assert rig.metrics.cost_usd["small"] > 0  # the prompt and the first chunk were produced
    assert rig.service.budget.pending("anonymous") == pytest.approx(rig.metrics.cost_usd["small"])
    server = [s for s in rig.spans() if s.name == "POST /v1/chat/completions"]
    assert len(server) == 1 and server[0].attributes["router.cancelled"] is True
    assert _open_spans(rig) == 0 and rig.service.open_requests == 0
    await chunks.aclose()  # idempotent
    assert rig.metrics.requests[("small", "chat", "cancelled")] == 1


async def test_cascade_escalation_failing_non_retryably_returns_and_charges_the_cheap_answer() -> None:
    big = FakeTarget("big", fail_first=9, error=UpstreamRejected("provider said 400"))
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0), big=big)
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200 and r.headers["x-router-target"] == "small", r.text
    assert len(big.calls) == 1
    cheap = rig.metrics.cost_usd["small"]
    assert cheap > 0 and rig.metrics.cost_usd["big"] == 0  # the refused call produced nothing
    assert float(r.headers["x-router-cost-usd"]) == pytest.approx(cheap)
    assert rig.service.budget.pending("anonymous") == pytest.approx(cheap)


async def test_cascade_charges_each_call_to_its_own_target() -> None:
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0), big=FakeTarget("big", logprob=-0.1))
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.headers["x-router-target"] == "big"
    small, big = rig.metrics.cost_usd["small"], rig.metrics.cost_usd["big"]
    assert small > 0 and big > small
    assert float(r.headers["x-router-cost-usd"]) == pytest.approx(small + big)


async def test_error_event_mid_stream_ends_the_stream_as_an_error() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", error_event_after=2)), limits=LimitsConfig(stream_failover="error"))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True))
    events = [e[6:] for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_interrupted"
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-2]] == ["hello", " from"]
    assert rig.metrics.requests[("small", "chat", "stream_error")] == 1
    assert rig.metrics.requests[("small", "chat", "ok")] == 0
    assert rig.estimator.error_rate("small") > 0 and rig.estimator.in_flight("small") == 0


async def test_error_event_before_any_output_fails_over() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", error_event_after=0)))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.headers["x-router-target"] == "big" and "error" not in r.text


async def test_budget_refusal_of_an_escalation_returns_the_cheap_answer() -> None:
    import json as _json

    from router.auth import AuthConfig, KeyStore

    # enough for the cheap call's reservation, not for big's on top of it
    keys = [{"name": "k", "key": "rk-k-0123456789", "budget_usd": 4e-6}]
    auth = KeyStore.from_config(AuthConfig(keys_env="K"), {"K": _json.dumps(keys)})
    fakes = _fakes(small=FakeTarget("small", logprob=-3.0), big=FakeTarget("big", logprob=-0.1))
    rig = Rig(fakes, policy=CascadePolicy(threshold=-1.0), auth=auth)
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(max_tokens=4),
                            headers={"authorization": "Bearer rk-k-0123456789"})
    assert r.status_code == 200 and r.headers["x-router-target"] == "small" and not fakes["big"].calls


async def test_one_probe_after_cool_down_while_others_route_elsewhere() -> None:
    import asyncio

    now = [0.0]
    small = FakeTarget("small", fail_first=3)
    rig = Rig(_fakes(small=small), clock=lambda: now[0])
    async with rig.http() as http:
        for _ in range(3):  # three failures: small cools down (30 s in the Rig)
            assert (await http.post("/v1/chat/completions", json=chat_body())).headers["x-router-target"] == "big"
        assert rig.view.state("small") == "cooling_down"
        now[0] = 31
        small.delay_s = 0.3
        probe = asyncio.create_task(http.post("/v1/chat/completions", json=chat_body()))
        await asyncio.sleep(0.1)
        assert len(small.calls) == 4 and rig.view.state("small") == "cooling_down"  # the probe is out
        others = await asyncio.gather(*(http.post("/v1/chat/completions", json=chat_body()) for _ in range(5)))
        assert {r.headers["x-router-target"] for r in others} == {"big"} and len(small.calls) == 4
        assert (await probe).headers["x-router-target"] == "small"
        assert rig.view.state("small") == "healthy"


async def test_failed_probe_restarts_the_cool_down() -> None:
    now = [0.0]
    rig = Rig(_fakes(small=FakeTarget("small", fail_first=4)), clock=lambda: now[0])
    async with rig.http() as http:
        for _ in range(3):
            await http.post("/v1/chat/completions", json=chat_body())
        now[0] = 31
        r = await http.post("/v1/chat/completions", json=chat_body())  # the probe fails, big answers
        assert r.headers["x-router-target"] == "big" and len(rig.fakes["small"].calls) == 4
        assert rig.view.state("small") == "cooling_down"


def test_live_view_feeds_only_a_learning_latency_view() -> None:
    from policies.latency import LatencyEstimator
    from router.view import LearningLatency, LiveView
    from tests.unit.router.fakes import PriorQuality, targets

    class Static:
        def predict(self, target, prompt_tokens, output_tokens):
            return 100.0, 200.0

    ts = targets()
    assert isinstance(LatencyEstimator(ts), LearningLatency) and not isinstance(Static(), LearningLatency)
    view = LiveView(ts, Static(), PriorQuality())
    ticket = view.started("small")  # nothing to feed: no error, no ticket
    view.observe("small", 1.0, 1.0, 1, ticket)
    view.finished("small", ticket)
    assert ticket is None and view.state("small") == "healthy"
