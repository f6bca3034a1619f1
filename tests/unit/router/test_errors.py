"""Every error class → HTTP status and OpenAI-style body, and the real paths that raise them."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import httpx
import pytest

from router import errors
from router.api import make_app
from router.limits import LimitsConfig
from tests.unit.router.fakes import FakeTarget, Rig, chat_body

# class name → (status, type, code)
TABLE: dict[str, tuple[int, str, str]] = {
    "RouterError": (500, "server_error", "internal_error"),
    "ClientError": (400, "invalid_request_error", "invalid_request"),
    "BadRequest": (400, "invalid_request_error", "invalid_request"),
    "Unauthorized": (401, "authentication_error", "invalid_api_key"),
    "Forbidden": (403, "permission_error", "target_not_allowed"),
    "NotFound": (404, "invalid_request_error", "model_not_found"),
    "PayloadTooLarge": (413, "invalid_request_error", "request_too_large"),
    "Unsatisfiable": (422, "invalid_request_error", "constraints_unsatisfiable"),
    "RateLimited": (429, "rate_limit_error", "rate_limited"),
    "BudgetExhausted": (429, "rate_limit_error", "budget_exhausted"),
    "UpstreamError": (502, "upstream_error", "upstream_error"),
    "BadGateway": (502, "upstream_error", "upstream_error"),
    "NoHealthyTarget": (503, "service_unavailable", "no_healthy_target"),
    "UpstreamTimeout": (504, "timeout", "upstream_timeout"),
    "UpstreamRejected": (502, "upstream_error", "upstream_rejected"),
    "UpstreamRateLimited": (503, "service_unavailable", "upstream_rate_limited"),
    "StreamInterrupted": (502, "upstream_error", "upstream_stream_interrupted"),
    "InternalError": (500, "server_error", "internal_error"),
}

ALL = sorted(
    name for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, errors.RouterError)
)


def test_table_covers_every_error_class() -> None:
    assert sorted(TABLE) == ALL


class Raising:
    """A service whose every call raises the given error."""

    limits = LimitsConfig()

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def chat(self, *a: Any, **k: Any) -> Any:
        raise self.exc

    chat_stream = chat

    def models(self, headers: Any) -> Any:
        raise self.exc

    def health(self) -> Any:
        raise self.exc


@pytest.mark.parametrize("name", ALL)
async def test_error_class_maps_to_status_and_body(name: str) -> None:
    status, type_, code = TABLE[name]
    exc = getattr(errors, name)(f"message of {name}")
    app = make_app(lambda: Raising(exc))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        for r in (
            await http.post("/v1/chat/completions", json=chat_body()),
            await http.post("/v1/chat/completions", json=chat_body(stream=True)),
            await http.get("/v1/models"),
        ):
            assert r.status_code == status
            assert r.json() == {"error": {"message": f"message of {name}", "type": type_, "code": code}}
            assert r.headers["x-router-reason"]


async def test_unexpected_exception_is_500_generic_and_logged_without_message(caplog: Any) -> None:
    app = make_app(lambda: Raising(ValueError("secret prompt text")))
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
            r = await http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 500
    assert r.json() == {
        "error": {"message": "internal error", "type": "server_error", "code": "internal_error"}
    }
    assert "ValueError" in caplog.text and "secret prompt text" not in caplog.text


async def _post(rig: Rig, content: Any = None, **kw: Any) -> httpx.Response:
    async with rig.http() as http:
        if content is not None:
            return await http.post("/v1/chat/completions", content=content, **kw)
        return await http.post("/v1/chat/completions", **kw)


def _err(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) - {"param"} == {"message", "type", "code"}
    return body["error"]


async def test_malformed_json_is_400() -> None:
    bad = b'{"model": "auto", "messages": ['
    r = await _post(Rig(), content=bad, headers={"content-type": "application/json"})
    assert r.status_code == 400 and _err(r)["code"] == "invalid_json"


async def test_non_object_body_is_400() -> None:
    r = await _post(Rig(), json=[1, 2])
    assert r.status_code == 400


async def test_unknown_routing_field_is_400_naming_it() -> None:
    r = await _post(Rig(), json=chat_body(routing={"max_latency_ms": 100, "colour": "red"}))
    assert r.status_code == 400 and "routing.colour" in _err(r)["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        (chat_body(routing={"min_quality": "high"}), "routing.min_quality"),
        (chat_body(routing={"latency_metric": "p99"}), "routing.latency_metric"),
        ({"model": "auto", "messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (chat_body(max_tokens=-1), "max_tokens"),
        (chat_body(stream="yes"), "stream"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    r = await _post(Rig(), json=body)
    assert r.status_code == 400 and field in _err(r)["message"]


async def test_bad_routing_header_is_400() -> None:
    r = await _post(Rig(), json=chat_body(), headers={"x-router-allow-fallback": "maybe"})
    assert r.status_code == 400 and "x-router-allow-fallback" in _err(r)["message"]
    r = await _post(Rig(), json=chat_body(), headers={"x-router-min-quality": "2"})
    assert r.status_code == 400 and "x-router-min-quality" in _err(r)["message"]


async def test_unknown_extra_fields_pass_through_to_target() -> None:
    rig = Rig()
    r = await _post(rig, json=chat_body(temperature=0.1, seed=7, custom_thing={"a": 1}))
    assert r.status_code == 200
    assert rig.fakes["small"].calls[0][1]["custom_thing"] == {"a": 1}


async def test_unknown_model_is_404() -> None:
    r = await _post(Rig(), json=chat_body() | {"model": "gpt-17"})
    assert r.status_code == 404 and "gpt-17" in _err(r)["message"]


async def test_unknown_route_is_404_same_shape() -> None:
    async with Rig().http() as http:
        r = await http.get("/v1/nothing")
    assert r.status_code == 404 and _err(r)["code"] == "not_found"


async def test_unsatisfiable_is_422_with_reason() -> None:
    r = await _post(Rig(), json=chat_body(routing={"min_quality": 0.9, "allow_fallback": False}))
    assert r.status_code == 422
    assert "no-target-fits" in _err(r)["message"]
    assert r.headers["x-router-reason"] == "no-target-fits"


async def test_no_healthy_target_is_503() -> None:
    rig = Rig()
    for t in ("small", "big", "api"):
        rig.view.set_health(t, False)
    r = await _post(rig, json=chat_body())
    assert r.status_code == 503 and _err(r)["code"] == "no_healthy_target"
    r = await _post(rig, json=chat_body() | {"model": "big"})
    assert r.status_code == 503


async def test_upstream_timeout_is_504() -> None:
    slow = {t: FakeTarget(t, delay_s=5) for t in ("small", "big", "api")}
    rig = Rig(slow, limits=LimitsConfig(request_timeout_s=0.05))
    r = await _post(rig, json=chat_body() | {"model": "small"})
    assert r.status_code == 504 and _err(r)["code"] == "upstream_timeout"


async def test_upstream_rejected_is_not_retried() -> None:
    fakes = {t: FakeTarget(t, fail_first=9, error=errors.UpstreamRejected("bad request upstream"))
             for t in ("small", "big", "api")}
    rig = Rig(fakes)
    r = await _post(rig, json=chat_body())
    assert r.status_code == 502 and _err(r)["code"] == "upstream_rejected"
    assert len(fakes["small"].calls) == 1 and not fakes["big"].calls


async def test_body_too_large_is_413_by_content_length_and_by_bytes() -> None:
    rig = Rig(limits=LimitsConfig(max_body_bytes=2048))
    r = await _post(rig, json=chat_body("x" * 5000))
    assert r.status_code == 413 and _err(r)["code"] == "request_too_large"

    async def chunked() -> Any:  # no Content-Length: the limit applies to the bytes read
        for _ in range(10):
            yield b" " * 500
            await asyncio.sleep(0)

    r = await _post(rig, content=chunked())
    assert r.status_code == 413


async def test_prompt_longer_than_every_context_window_is_400() -> None:
    r = await _post(Rig(), json=chat_body("word " * 40_000))  # ~50k tokens > 8192
    assert r.status_code == 400 and _err(r)["code"] == "context_length_exceeded"


async def test_prompt_longer_than_pinned_context_window_is_400() -> None:
    r = await _post(Rig(), json=chat_body("abcd" * 3000) | {"model": "small"})  # ~3000 > 2048
    assert r.status_code == 400 and "small" in _err(r)["message"]


async def test_method_not_allowed_same_shape() -> None:
    async with Rig().http() as http:
        r = await http.get("/v1/chat/completions")
    assert r.status_code == 405 and _err(r)
