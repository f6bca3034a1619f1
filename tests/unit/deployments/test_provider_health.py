"""ProviderClient.probe (the ingress's health check) over httpx.MockTransport: what it asks, what each
answer means, and that it never moves the breaker (only request attempts do)."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.deployments.provider_fakes import KEY, Harness, ok_json, raises, status


def models_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": []})


async def test_probe_gets_the_health_path_with_the_key_on_its_own_client():
    h = Harness([models_ok])
    assert await h.client.probe() is True
    req = h.requests[0]
    assert (req.method, req.url) == ("GET", "https://provider.test/v1/models")
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert h.client.healthy and h.client.probe_failure is None
    assert h.client._probe_http is not h.client._http  # its own connection pool


@pytest.mark.parametrize(
    "answer, reason",
    [
        (status(500), "HTTP 500"),
        (status(503), "HTTP 503"),
        (status(401), "HTTP 401"),
        (status(403), "HTTP 403"),
        (raises(httpx.ConnectError(f"refused {KEY}")), "connection failed (ConnectError)"),
        (raises(httpx.ReadTimeout("slow")), "no answer within 5s"),
        (raises(httpx.PoolTimeout("full")), "no answer within 5s"),
    ],
)
async def test_failed_probe_marks_unhealthy_without_touching_the_breaker(answer, reason):
    h = Harness([answer], breaker={"failure_threshold": 1})
    assert await h.client.probe() is False
    assert not h.client.healthy and reason in (h.client.probe_failure or "")
    health = h.client.health()
    assert health["healthy"] is False and health["reason"] == h.client.probe_failure
    assert KEY not in str(health)
    # the breaker (failure_threshold 1) saw nothing: a probe is no request attempt
    assert h.client.breaker.snapshot() == {"state": "closed", "healthy": True, "consecutive_failures": 0,
                                           "retry_in_s": 0.0, "last_failure": None}


@pytest.mark.parametrize("code", [404, 429, 400])
async def test_probe_answered_with_other_4xx_counts_as_up(code):
    h = Harness([status(code)])
    assert await h.client.probe() is True and h.client.healthy


async def test_probe_passing_again_makes_it_routable_again():
    h = Harness([status(500), models_ok])
    assert await h.client.probe() is False and not h.client.healthy
    assert await h.client.probe() is True and h.client.healthy and h.client.probe_failure is None


async def test_open_breaker_stays_open_whatever_the_probe_says():
    h = Harness([status(500), models_ok], retry={"max_retries": 0}, breaker={"failure_threshold": 1})
    with pytest.raises(Exception):
        await h.client.complete("chat", {"model": "gpt-x", "messages": []})
    assert h.client.state == "open" and not h.client.healthy
    assert await h.client.probe() is True  # the provider answers its probe...
    assert h.client.state == "open" and not h.client.healthy  # ...the breaker still decides for requests


async def test_no_probe_when_disabled():
    h = Harness([ok_json], health_path=None)
    assert await h.client.probe() is None and h.requests == [] and h.client.healthy
