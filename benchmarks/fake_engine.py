"""A fast deterministic fake model deployment for the overhead benchmark.

`FakeLLM` exposes the same dict-level `complete(endpoint, body)` / `stream(endpoint, body)` methods as
`deployments.vllm.RouterLLMServer`, so the router's `HandleClient` talks to it unchanged, plus an HTTP
`__call__` that answers an OpenAI chat body on the deployment's own Serve route (the one-hop baseline).
Latency is fixed: `ttft_s` before the first token, then `token_delay_s` per further token; the answer
is `max_tokens` (default `tokens`) copies of a word, with real usage counts.

`Passthrough` is the two-hop floor for any router on Serve: it reads the body and forwards it by handle
to the same deployment, with no parsing, policy or accounting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return len(str(body.get("prompt", "")).split())


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
class FakeLLM:
    def __init__(self, model_id: str, ttft_s: float = 0.005, token_delay_s: float = 0.001, tokens: int = 16):
        self.model_id = model_id
        self.ttft_s = ttft_s
        self.token_delay_s = token_delay_s
        self.tokens = tokens

    def _n(self, body: dict[str, Any]) -> int:
        return max(1, min(int(body.get("max_tokens") or self.tokens), self.tokens))

    def _usage(self, body: dict[str, Any], n: int) -> dict[str, int]:
        p = _prompt_tokens(body)
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        n = self._n(body)
        await asyncio.sleep(self.ttft_s + (n - 1) * self.token_delay_s)
        text = " ".join(["tok"] * n)
        if endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            obj = "text_completion"
        return {
            "id": "fake-1", "object": obj, "created": int(time.time()), "model": self.model_id,
            "choices": [choice], "usage": self._usage(body, n),
        }

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        n = self._n(body)
        created = int(time.time())
        await asyncio.sleep(self.ttft_s)
        for i in range(n):
            if i:
                await asyncio.sleep(self.token_delay_s)
            delta = {"content": "tok "} if endpoint == "chat" else None
            choice = {"index": 0, "delta": delta} if delta else {"index": 0, "text": "tok "}
            yield {"id": "fake-1", "object": "chat.completion.chunk", "created": created,
                   "model": self.model_id, "choices": [choice]}
        yield {"id": "fake-1", "object": "chat.completion.chunk", "created": created,
               "model": self.model_id, "choices": [], "usage": self._usage(body, n)}

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = json.loads(await request.body())
        return JSONResponse(await self.complete("chat", body))


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
class Passthrough:
    def __init__(self, handle: Any) -> None:
        self._complete = handle.complete

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = json.loads(await request.body())
        return JSONResponse(await self._complete.remote("chat", body))
