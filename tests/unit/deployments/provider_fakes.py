"""Deterministic seams for ProviderClient unit tests: a fake clock, a recording sleep, scripted transport."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from deployments.provider import ProviderClient, ProviderConfig

KEY = "sk-test-SECRET-4f9a2b7c"


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Harness:
    """A ProviderClient whose transport answers from `responses` (one per attempt, last one repeats)."""

    def __init__(self, responses: list[Callable[[httpx.Request], httpx.Response] | httpx.Response],
                 **config: Any):
        self.responses = responses
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.clock = FakeClock()
        self.wall = 1_700_000_000.0
        defaults: dict[str, Any] = {"id": "gpt-x", "base_url": "https://provider.test/v1",
                                    "model": "provider-model-1", "api_key_env": "PROVIDER_KEY"}
        self.config = ProviderConfig(**{**defaults, **config})
        self.client = ProviderClient(self.config, KEY, transport=httpx.MockTransport(self._handle),
                                     clock=self.clock, wall_clock=lambda: self.wall, sleep=self._sleep,
                                     rng=random.Random(7))

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return item(request) if callable(item) else item

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def ok_json(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    })


def chunk(text: str, model: str = "provider-model-1") -> dict[str, Any]:
    return {"id": "s1", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


USAGE_CHUNK = {"id": "s1", "object": "chat.completion.chunk", "model": "provider-model-1", "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def sse(*events: dict[str, Any] | str, done: bool = True) -> bytes:
    parts = [e if isinstance(e, str) else f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(parts) + ("data: [DONE]\n\n" if done else "")).encode()


def sse_response(
    payload: bytes, *, fail_after: bytes | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    """Stream `payload`; with fail_after, send those bytes first and then reset the connection."""

    async def body() -> AsyncIterator[bytes]:
        if fail_after is None:
            for line in payload.split(b"\n\n"):
                if line:
                    yield line + b"\n\n"
            return
        yield fail_after
        raise httpx.ReadError("connection reset by peer")

    return lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def status(
    code: int, *, retry_after: str | None = None, body: dict[str, Any] | None = None
) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return httpx.Response(code, headers=headers, json=body or {"error": {"message": "nope", "code": "x"}})


def raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler
