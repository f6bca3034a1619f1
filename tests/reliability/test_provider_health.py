"""The provider, called from the ingress itself (no provider deployment), on a real Serve app.

- The ingress's health probe is off the request path: with every request connection of the provider's
  client held by requests parked at the fake provider, the probe still sees the provider fail (503,
  no answer within timeouts.health_s) and recover, and /healthz says so; the parked requests are
  answered afterwards.
- A client that goes away while its provider call is in flight: the provider sees the connection close.

Every request is counted: accepted = answered + errored, lost = 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.harness import PROVIDER_KEY, Tally, chat, deploy, provider, ray_serve, record, send
from tests.support.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8270
BASE = f"http://127.0.0.1:{PORT}"
POOL = 2  # provider.max_connections: request connections per ingress replica


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=PROVIDER_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def app(server: FakeOpenAI) -> Iterator[str]:
    cfg = {
        "providers": [provider("prov", server.base_url, max_connections=POOL,
                               timeouts={"connect_s": 1, "read_s": 60, "total_s": 90, "health_s": 0.5},
                               retry={"max_retries": 0})],
        "limits": {"request_timeout_s": 90},
        "ingress": {"health_poll_s": 0.2},
    }
    with ray_serve(PORT):
        yield deploy("ph", cfg)


@pytest.fixture(autouse=True)
def fresh(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    server.release_parked()


async def state(c: httpx.AsyncClient, app: str) -> str:
    return (await c.get(app + "/healthz", timeout=10)).json()["targets"]["prov"]


async def until_state(c: httpx.AsyncClient, app: str, wanted: str) -> None:
    while await state(c, app) != wanted:  # bounded by pytest's timeout; no time assertion
        await asyncio.sleep(0.1)


async def until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.02)


def test_health_probe_is_not_queued_behind_parked_requests(app: str, server: FakeOpenAI):
    async def run() -> Tally:
        tally = Tally()
        async with httpx.AsyncClient(base_url=BASE) as c:
            await until_state(c, app, "healthy")
            server.mode = "park"
            parked = [asyncio.create_task(send(c, app + "/v1/chat/completions", chat(model="prov"), tally,
                                               timeout=120)) for _ in range(POOL)]
            await until(lambda: server.parked == POOL)  # the request pool is full
            probes_before = sum(r.path == "/v1/models" for r in server.requests)
            server.models_status = 503
            await until_state(c, app, "down")
            server.models_status = 200
            await until_state(c, app, "healthy")
            server.models_delay_s = 30  # the probe is taken but not answered: its own timeout ends it
            await until_state(c, app, "down")
            server.models_delay_s = 0
            await until_state(c, app, "healthy")
            assert server.parked == POOL and not any(t.done() for t in parked)
            assert sum(r.path == "/v1/models" for r in server.requests) > probes_before
            server.release_parked()
            await asyncio.gather(*parked)
        return tally

    tally = asyncio.run(run())
    assert tally.outcomes == {"ok": POOL} and tally.targets == {"prov": POOL}, tally.row()
    record("provider health probe while the request pool is parked (503, no answer, recovery seen)", tally)


def test_client_gone_cancels_the_provider_call(app: str, server: FakeOpenAI):
    async def run() -> None:
        async with httpx.AsyncClient(base_url=BASE) as c:
            await until_state(c, app, "healthy")
            server.mode = "park"
            for stream in (False, True):
                before = server.disconnects
                call = asyncio.create_task(c.post(app + "/v1/chat/completions", json=chat(model="prov",
                                                                                          stream=stream)))
                await until(lambda: server.parked == 1)
                call.cancel()  # the client hangs up: Serve cancels the request, the ingress its HTTP call
                with pytest.raises(asyncio.CancelledError):
                    await call
                await until(lambda b=before: server.disconnects == b + 1)
            assert server.parked == 0
            # nothing was a provider failure: still routable
            assert await state(c, app) == "healthy"

    asyncio.run(run())
    record("client gone while its provider call is in flight: the provider sees the call cancelled",
           {"sent": 2, "answered": 0, "errored": 0, "lost": 0, "upstream_cancelled": 2})
