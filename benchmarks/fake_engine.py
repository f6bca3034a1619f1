"""A fast deterministic fake model deployment for the overhead benchmark.

`FakeLLM` is tests/support/fake_engine.py's FakeEngineReplica as a deployment with this benchmark's
Serve options: the same dict-level `complete(endpoint, body)` / `stream(endpoint, body)` methods as
`deployments.vllm.RouterLLMServer`, so the router's `HandleClient` talks to it unchanged, plus an HTTP
`__call__` that answers an OpenAI chat body on the deployment's own Serve route (the one-hop baseline).
Latency is fixed: `ttft_s` before the first token, then `token_delay_s` per further token; the answer
is `max_tokens` (default `tokens`) words, with real usage counts.

`Passthrough` is the two-hop floor for any router on Serve: it reads the body and forwards it by handle
to the same deployment, with no parsing, policy or accounting. A body with `"stream": true` is streamed
(the deployment's `stream` by handle through `HandleClient`, which unpacks batched chunks, out as SSE):
the streaming benchmark's one-hop route to a vLLM engine, which has no HTTP route of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.handle_client import HandleClient
from tests.support.fake_engine import FakeEngineReplica

# The tests' fake engine (tests/support/fake_engine.py), with the benchmark's Serve options: one fake
# for the reliability suite and the overhead benchmarks.
FakeLLM = serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})(FakeEngineReplica)


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
class Passthrough:
    def __init__(self, handle: Any) -> None:
        self._complete = handle.complete
        self._client = HandleClient(handle)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        body = json.loads(await request.body())
        if not body.get("stream"):
            return JSONResponse(await self._complete.remote("chat", body))

        async def sse() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(self._client.stream("chat", body)) as chunks:
                async for c in chunks:
                    yield b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")
