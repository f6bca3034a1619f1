"""Faults on a real Serve app with fake engines: a model replica killed under load, and the proprietary
provider (the fake OpenAI server on 127.0.0.1) failing in every way it can.

Every request is counted: accepted = answered + errored, lost = 0.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.reliability.harness import (
    Tally,
    chat,
    deploy,
    model,
    provider,
    ray_serve,
    record,
    replica_actors,
    send,
    steady_load,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8210
BASE = f"http://127.0.0.1:{PORT}"
STRONG = {"routing": {"min_quality": 0.8}}  # only the provider fits


@pytest.fixture(scope="module")
def cluster():
    with ray_serve(PORT) as tmp:
        yield tmp


# -- a model replica killed under load -------------------------------------------------------------
@pytest.fixture(scope="module")
def kill_app(cluster):
    cfg = {
        "models": [model("local-a", 0.01, 0.5), model("local-b", 0.02, 0.5)],
        "limits": {"request_timeout_s": 10, "max_alternates": 2},
    }
    slow = {"ttft_s": 0.05, "token_delay_s": 0.06, "words": 15}
    return deploy("kill", cfg, {"local-a": slow, "local-b": {"ttft_s": 0.02, "token_delay_s": 0.01}})


def test_replica_killed_under_load(kill_app):
    import ray

    path = kill_app + "/v1/chat/completions"
    bodies = [chat("count for me"), chat("count for me", stream=True)]

    async def scenario() -> tuple[Tally, Tally]:
        async with httpx.AsyncClient(base_url=BASE, limits=httpx.Limits(max_connections=300)) as c:
            warm = Tally()
            await asyncio.gather(*(send(c, path, b, warm) for b in bodies * 3))
            assert warm.outcomes == {"ok": 6}, warm.row()
            load = asyncio.create_task(steady_load(BASE, path, bodies, rate=16, duration_s=8, client=c))
            await asyncio.sleep(2.5)
            victims = replica_actors("kill", "model-local-a")
            assert len(victims) == 1
            name, ns = victims[0]
            await asyncio.to_thread(lambda: ray.kill(ray.get_actor(name, namespace=ns), no_restart=True))
            return await load, warm

    tally, _ = asyncio.run(scenario())
    record("replica killed under load (fake engines, 16 req/s, half streams)", tally)
    assert tally.lost == 0, (tally.row(), tally.problems[:5])
    # non-streams are retried on the alternate before the first token; streams that had started on the
    # killed replica are continued on local-b (issue 16): every request is answered
    assert tally.outcomes == {"ok": tally.sent}, (tally.row(), tally.problems[:5])
    assert tally.continued > 0, tally.row()
    assert tally.targets["local-b"] > 0  # failover happened

    # Serve restarts the replica, and once the cool-down is over routing returns to it.
    assert wait_until(lambda: len(replica_actors("kill", "model-local-a")) == 1, 60)

    def back_on_a() -> bool:
        r = httpx.post(BASE + path, json=chat("again"), timeout=30)
        return r.status_code == 200 and r.headers["x-router-target"] == "local-a"

    t0 = time.monotonic()
    assert wait_until(back_on_a, 60, interval=1.0)
    record("replica restarted, routing returned", {"sent": 1, "answered": 1, "errored": 0, "lost": 0},
           seconds_to_return=round(time.monotonic() - t0, 1))


# -- proprietary provider faults -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_provider():
    from tests.reliability.harness import PROVIDER_KEY
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key=PROVIDER_KEY, ttft_s=0.02, token_delay_s=0.005) as server:
        yield server


@pytest.fixture(scope="module")
def prov_app(cluster, fake_provider):
    cfg = {
        "models": [model("local", 0.01, 0.5)],
        "providers": [provider(
            "prov", fake_provider.base_url,
            timeouts={"connect_s": 1, "read_s": 1.0, "total_s": 4.0},
            retry={"max_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "retry_after_max_s": 2},
            breaker={"failure_threshold": 4, "open_s": 4.0},
        )],
        "limits": {"request_timeout_s": 6},
        "ingress": {"health_poll_s": 0.3},
    }
    return deploy("prov", cfg)


DEADLINE_S = 6 + 1.5  # limits.request_timeout_s + slack for the hop and the poll


async def _mixed(path: str, n: int, stream: bool = False) -> tuple[Tally, Tally]:
    """n requests that only the provider fits, and n plain ones the local model takes, concurrently."""
    strong, plain = Tally(), Tally()
    async with httpx.AsyncClient(base_url=BASE) as c:
        await asyncio.gather(
            *(send(c, path, chat("hard question", stream=stream, **STRONG), strong) for _ in range(n)),
            *(send(c, path, chat("easy question", stream=stream), plain) for _ in range(n)),
        )
    return strong, plain


def _provider_state(path: str) -> str:
    r = httpx.get(BASE + path + "/healthz", timeout=10)
    return r.json()["targets"]["prov"]


@pytest.mark.parametrize("fault", ["500", "reset", "hang:8"])
def test_provider_down_breaker_opens_and_recovers(prov_app, fake_provider, fault):
    path = prov_app + "/v1/chat/completions"
    fake_provider.clear()
    fake_provider.mode = "ok"
    assert wait_until(lambda: _provider_state(prov_app) == "healthy", 15)
    strong, plain = asyncio.run(_mixed(path, 4))
    assert strong.outcomes == {"ok": 4} and strong.targets == {"prov": 4}, strong.row()

    fake_provider.clear()
    fake_provider.mode = fault
    total = Tally()
    s1, p1 = asyncio.run(_mixed(path, 6))
    # bounded retries: at most 1 + max_retries attempts per request (fewer once the breaker opens)
    assert fake_provider.completion_count <= 6 * 3
    assert set(s1.outcomes) <= {"http_502", "http_503", "http_504", "http_422"}, s1.row()
    assert p1.outcomes == {"ok": 6}, p1.row()  # local models keep serving
    assert max(s1.durations + p1.durations) < DEADLINE_S
    # The breaker (in the ingress replica) opened: the provider reads down and the policy stops choosing it.
    assert wait_until(lambda: _provider_state(prov_app) == "down", 5)
    before = fake_provider.completion_count
    s2, p2 = asyncio.run(_mixed(path, 6))
    assert fake_provider.completion_count == before, "an open breaker must keep requests off the provider"
    assert set(s2.outcomes) <= {"http_422", "http_503"} and p2.outcomes == {"ok": 6}, (s2.row(), p2.row())
    assert max(s2.durations) < 1.5  # refused at once, not after a timeout

    # The provider comes back: the breaker half-opens after open_s, the probe succeeds, it closes.
    fake_provider.mode = "ok"
    assert wait_until(lambda: _provider_state(prov_app) == "healthy", 10)
    # Half-open lets one probe through at a time (others are refused with 503, not queued): the probe
    # answers, the breaker closes, and concurrent traffic flows again.
    probe, _ = asyncio.run(_mixed(path, 1))
    assert probe.outcomes == {"ok": 1}, probe.row()
    s3, p3 = asyncio.run(_mixed(path, 4))
    assert s3.outcomes == {"ok": 4} and s3.targets == {"prov": 4}, s3.row()
    for t in (strong, plain, s1, p1, s2, p2, probe, s3, p3):
        total.merge(t)
    assert total.lost == 0
    record(f"provider fault '{fault}': breaker opens, locals keep serving, recovers", total,
           provider_attempts_while_failing=before)


def test_provider_429_retry_after(prov_app, fake_provider):
    path = prov_app + "/v1/chat/completions"
    fake_provider.clear()
    fake_provider.mode = "ok"
    assert wait_until(lambda: _provider_state(prov_app) == "healthy", 15)
    total = Tally()
    # A short Retry-After is honoured (waited for) and the retry succeeds.
    fake_provider.script("429:1")
    t0 = time.monotonic()
    s, _ = asyncio.run(_mixed(path, 1))
    waited = time.monotonic() - t0
    assert s.outcomes == {"ok": 1} and 1.0 <= waited < DEADLINE_S, (s.row(), waited)
    assert fake_provider.completion_count == 2
    total.merge(s)
    # A Retry-After longer than retry_after_max_s fails at once with 503 + Retry-After, no waiting.
    fake_provider.clear()
    fake_provider.script("429:30")
    r = httpx.post(BASE + path, json=chat("hard", **STRONG), timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_rate_limited", r.text
    assert r.headers.get("retry-after") == "30"
    assert fake_provider.completion_count == 1
    total.outcomes["http_503"] += 1
    # Streaming: a 429 before the first chunk is retried too.
    fake_provider.clear()
    fake_provider.script("429:1")
    s, _ = asyncio.run(_mixed(path, 1, stream=True))
    assert s.outcomes == {"ok": 1}, s.row()
    total.merge(s)
    record("provider 429 with Retry-After (1 s honoured, 30 s refused fast)", total)


def test_provider_broken_stream(prov_app, fake_provider):
    path = prov_app + "/v1/chat/completions"
    fake_provider.clear()
    fake_provider.mode = "ok"
    assert wait_until(lambda: _provider_state(prov_app) == "healthy", 15)
    total = Tally()
    for fault in ("broken:2", "cut:3", "stall:2:8"):
        fake_provider.script(fault)
        s = Tally()
        asyncio.run(_one(path, s))
        # output had begun: never retried, the stream ends with an error event and [DONE]
        assert s.outcomes == {"stream_error": 1}, (fault, s.row())
        assert max(s.durations) < DEADLINE_S
        total.merge(s)
    record("provider stream broken / cut / stalled after output began", total)


async def _one(path: str, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=BASE) as c:
        await send(c, path, chat("hard", stream=True, **STRONG), tally)
