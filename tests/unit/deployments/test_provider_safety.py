"""The key never leaks; config is typed and documented; the client the ingress builds from the env works."""

from __future__ import annotations

import json
import logging
import pickle
import traceback

import httpx
import pytest
from pydantic import BaseModel

from deployments.breaker import BreakerConfig
from deployments.provider import ProviderClient, ProviderConfig, TimeoutConfig
from deployments.retry import RetryConfig
from router.errors import NoHealthyTarget, RouterError, UpstreamError
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

CFG = {"id": "gpt-x", "base_url": "https://provider.test/v1", "model": "provider-model-1",
       "api_key_env": "PROVIDER_KEY"}
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
ECHO = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": f"bad_{KEY}"}}


def leak_free(*texts: str) -> bool:
    return all(KEY not in t and "SECRET" not in t for t in texts)


@pytest.mark.parametrize(
    "responses",
    [
        [status(401, body=ECHO)],
        [status(400, body=ECHO)],
        [status(500, body=ECHO)],
        [status(429, retry_after="99", body=ECHO)],
        [raises(httpx.ConnectError(f"refused {KEY}"))],
        [raises(httpx.ReadTimeout("slow"))],
        [sse_response(b"", fail_after=sse(chunk("a"), done=False))],
    ],
)
async def test_key_never_in_errors_logs_or_tracebacks(responses, caplog):
    caplog.set_level(logging.DEBUG)
    h = Harness(responses, breaker={"failure_threshold": 2})
    errors: list[RouterError] = []
    for _ in range(3):  # the last call meets an open breaker for most scenarios
        try:
            async for _ in h.client.stream("chat", CHAT):
                pass
            await h.client.complete("chat", CHAT)
        except RouterError as e:
            errors.append(e)
    assert errors and h.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for e in errors:
        rebuilt = pickle.loads(pickle.dumps(e))
        assert leak_free(str(e), repr(e), "".join(traceback.format_exception(e)), json.dumps(e.body()),
                         json.dumps(e.headers), str(rebuilt))
        assert type(rebuilt) is type(e) and rebuilt.retryable == e.retryable
    assert leak_free(caplog.text, repr(h.client), str(h.client), json.dumps(h.client.health()))


def test_client_and_config_reprs_hide_the_key():
    client = ProviderClient(ProviderConfig(**CFG), KEY)
    assert "***" in repr(client) and leak_free(repr(client), str(client), repr(client.__dict__))
    assert "PROVIDER_KEY" in repr(client.config)


def test_config_rejects_a_key_where_a_name_belongs_and_auth_headers():
    with pytest.raises(ValueError, match="NAME"):
        ProviderConfig(**{**CFG, "api_key_env": KEY})
    with pytest.raises(ValueError, match="api_key_env"):
        ProviderConfig(**CFG, headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(ValueError):
        ProviderConfig(**CFG, api_key="sk-inline")  # extra="forbid"
    with pytest.raises(ValueError):
        ProviderConfig(**{**CFG, "base_url": "ftp://x"})


def test_config_is_frozen_documented_and_yaml_friendly():
    cfg = ProviderConfig(**CFG, retry={"max_retries": 1}, breaker={"open_s": 5}, timeouts={"total_s": 9})
    with pytest.raises(ValueError):
        cfg.model = "other"  # type: ignore[misc]
    assert ProviderConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg
    target = cfg.target()
    assert (target.id, target.kind, target.quality_prior) == ("gpt-x", "api", cfg.quality_prior)
    models: list[type[BaseModel]] = [ProviderConfig, TimeoutConfig, RetryConfig, BreakerConfig]
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


# -- the client as the ingress builds it (key from the env var the config names) -----------------
def from_env(responses, monkeypatch, key: str | None = KEY) -> ProviderClient:
    if key is None:
        monkeypatch.delenv("PROVIDER_KEY", raising=False)
    else:
        monkeypatch.setenv("PROVIDER_KEY", key)

    def handle(request: httpx.Request) -> httpx.Response:
        item = responses.pop(0) if len(responses) > 1 else responses[0]
        return item(request) if callable(item) else item

    return ProviderClient.from_env(ProviderConfig.model_validate(CFG), transport=httpx.MockTransport(handle))


async def test_client_from_env_complete_stream_and_health(monkeypatch):
    c = from_env([ok_json, sse_response(sse(chunk("a"), USAGE_CHUNK))], monkeypatch)
    out = await c.complete("chat", CHAT)
    chunks = [ch async for ch in c.stream("chat", CHAT)]
    assert out["model"] == "gpt-x" and chunks[-1]["usage"]["total_tokens"] == 5
    health = c.health()
    assert health["healthy"] and health["state"] == "closed" and health["target"] == "gpt-x"
    assert json.loads(json.dumps(health)) == health and leak_free(repr(c))
    await c.aclose()


async def test_client_without_key_reports_unhealthy_instead_of_crashing(monkeypatch, caplog):
    c = from_env([ok_json], monkeypatch, key=None)
    health = c.health()
    assert health["healthy"] is False and "PROVIDER_KEY" in health["reason"]
    assert await c.probe() is None  # no key: nothing to probe with, stays unhealthy
    with pytest.raises(NoHealthyTarget) as info:
        await c.complete("chat", CHAT)
    assert "PROVIDER_KEY" in info.value.message and isinstance(info.value, UpstreamError)
    assert "PROVIDER_KEY" in caplog.text
    await c.aclose()
