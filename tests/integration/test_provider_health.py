"""The provider health probe and cancellation over real HTTP (the fake provider on 127.0.0.1, no Ray).

The probe has its own connection pool: with every request connection held by requests parked at the
provider, a probe still reaches it (and still gives up within its own timeout when the provider does not
answer it). A call the router abandons (its task cancelled, its stream closed) closes its connection:
the provider sees the client go away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from deployments.provider import ProviderClient, ProviderConfig
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(60)
KEY = "sk-fake-health-SECRET"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
POOL = 2  # request connections of the client under test


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    server.release_parked()


def client(server: FakeOpenAI, **cfg) -> ProviderClient:
    cfg.setdefault("max_connections", POOL)
    config = ProviderConfig(id="gpt-x", base_url=server.base_url, model="fake-model", api_key_env="FAKE_KEY",
                            retry={"max_retries": 0}, **cfg)
    return ProviderClient(config, KEY)


async def until(cond: Callable[[], bool]) -> None:
    while not cond():  # bounded by the test's timeout, not by a time assertion
        await asyncio.sleep(0.01)


async def park_pool(server: FakeOpenAI, c: ProviderClient) -> list[asyncio.Task]:
    server.mode = "park"
    tasks = [asyncio.create_task(c.complete("chat", CHAT)) for _ in range(POOL)]
    await until(lambda: server.parked == POOL)
    return tasks


async def test_probe_is_answered_while_every_request_connection_is_parked(server: FakeOpenAI):
    async with client(server, timeouts={"connect_s": 0.2}) as c:
        parked = await park_pool(server, c)
        # Control: the request pool is full, so a call through it cannot even get a connection...
        with pytest.raises(httpx.TimeoutException):  # waiting for a free connection
            await c._http.get("models", headers={"Authorization": f"Bearer {KEY}"})
        # ...while the probe, on its own connection, reaches the provider and gets its answer.
        assert await c.probe() is True
        assert server.parked == POOL and not any(t.done() for t in parked)
        assert [r.path for r in server.requests].count("/v1/models") == 1
        assert c.healthy and c.health()["reason"] is None
        server.release_parked()
        answers = await asyncio.gather(*parked)
    assert all(a["usage"]["completion_tokens"] == 3 for a in answers)


async def test_probe_gives_up_within_its_own_timeout_while_the_pool_is_parked(server: FakeOpenAI):
    async with client(server, timeouts={"health_s": 0.3}) as c:
        parked = await park_pool(server, c)
        server.models_delay_s = 30  # the provider takes the probe but does not answer it
        assert await c.probe() is False
        assert c.probe_failure == "health probe got no answer within 0.3s" and not c.healthy
        assert c.health()["reason"] == c.probe_failure
        assert server.parked == POOL and not any(t.done() for t in parked)  # requests untouched
        assert c.breaker.snapshot()["consecutive_failures"] == 0  # a probe is not a request attempt
        server.models_delay_s = 0
        assert await c.probe() is True and c.healthy  # answered again: routable again
        server.release_parked()
        await asyncio.gather(*parked)


async def test_probe_reports_a_failing_provider_while_requests_are_parked(server: FakeOpenAI):
    async with client(server) as c:
        parked = await park_pool(server, c)
        server.models_status = 503
        assert await c.probe() is False and c.probe_failure == "health probe answered HTTP 503"
        server.release_parked()
        await asyncio.gather(*parked)


async def test_abandoned_call_is_cancelled_upstream(server: FakeOpenAI):
    server.mode = "park"
    async with client(server, breaker={"half_open_probes": 1}) as c:
        call = asyncio.create_task(c.complete("chat", CHAT))
        await until(lambda: server.parked == 1)
        call.cancel()  # what the router does on an attempt timeout, a failover or a client gone
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: server.disconnects == 1)  # the provider saw the connection close

        stream = c.stream("chat", CHAT)
        first = asyncio.create_task(anext(stream))
        await until(lambda: server.parked == 1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await until(lambda: server.disconnects == 2)
        # abandoned calls are no verdict on the provider: the breaker saw neither as a failure
        assert c.breaker.snapshot()["consecutive_failures"] == 0 and c.state == "closed"
    assert server.parked == 0


async def test_stream_closed_mid_way_closes_its_connection(server: FakeOpenAI):
    server.mode = "stall:1:30"
    async with client(server, max_connections=1, timeouts={"connect_s": 0.5}) as c:
        stream = c.stream("chat", CHAT)
        assert (await anext(stream))["model"] == "gpt-x"
        await stream.aclose()  # the router closes the stream (aclosing) when the client goes away
        assert c.state == "closed" and c.breaker.snapshot()["consecutive_failures"] == 0
        # the one request connection is free again (were it still held, this call would time out waiting)
        server.mode = "ok"
        assert (await c.complete("chat", CHAT))["choices"]
