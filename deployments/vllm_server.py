"""The model replica's class, `RouterLLMServer` (imports ray.serve.llm and so torch and vLLM).

We use ray.serve.llm's LLMServer as it is and add one thin subclass for a need LLMServer does not meet: a
dict-in, dict-out call. LLMServer.chat takes vLLM's request objects and, when streaming, yields batches
of pre-rendered SSE strings; our ingress would then have to import vLLM and re-parse every chunk. The
subclass builds the request and parses chunks inside the model replica (spreading that CPU over the
model's replicas), and only plain dicts (and lists of them) cross the handle. It skips LLMServer's output
batching, which holds every chunk, the first token's too, for up to 50 ms; streams are batched by
deployments/handle_client.py's `batch_stream` instead (the first output chunk at once, later chunks
grouped when they come faster than one per ROUTER_STREAM_BATCH_MS).

Only the replica imports this module: the application builder names it by import path
(`deployments.vllm`), so `serve run`'s build tasks never import vLLM.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
from ray.serve.llm import LLMConfig, LLMServer

from deployments.handle_client import batch_interval_ms, batch_stream
from deployments.vllm_plugin import engine_core_fork_enabled, fork_engine_core

_DONE = "[DONE]"


class ForkingVLLMEngine(VLLMEngine):
    """VLLMEngine whose EngineCore process is forked from the replica (CPU engines opted in, see
    deployments/vllm_plugin.py): one interpreter start and torch/vLLM import less per engine."""

    def _start_async_llm_engine(self, *args: Any, **kwargs: Any) -> Any:
        if not engine_core_fork_enabled():
            return super()._start_async_llm_engine(*args, **kwargs)
        with fork_engine_core():
            return super()._start_async_llm_engine(*args, **kwargs)


class RouterLLMServer(LLMServer):  # type: ignore[misc]
    """LLMServer plus the dict-level calls the router's ingress uses (see module docstring)."""

    _default_engine_cls = ForkingVLLMEngine  # type: ignore[assignment]
    _stream_batch_ms: float | None = None  # set from ROUTER_STREAM_BATCH_MS in __init__

    async def __init__(self, llm_config: LLMConfig | dict[str, Any], **kwargs: Any) -> None:  # type: ignore[misc]
        # The builder passes LLMConfig's fields as a dict (building an LLMConfig imports torch).
        if isinstance(llm_config, dict):
            llm_config = LLMConfig(**llm_config)
        self._stream_batch_ms = batch_interval_ms()
        await super().__init__(llm_config, **kwargs)

    async def set_stream_batching(self, interval_ms: float | None) -> None:
        """Change this replica's stream batching at run time (None: off); the streaming benchmark's switch
        for a before/after comparison on one engine."""
        self._stream_batch_ms = interval_ms

    async def _start_engine(self) -> None:
        # LLMServer's version then reports ray.serve.llm usage telemetry to a detached actor it creates on
        # first use and waits for it: a Ray worker process start that held each replica's readiness for
        # 10-15 s on 2 cores (after the engine was ready). The router sends no such report.
        if self.engine is None:
            raise ValueError("Engine is not set")
        await self.engine.start()

    async def wake(self) -> dict[str, Any]:
        """The router's wake-up call for a model scaled to zero: Serve's autoscaler counts the call queued
        at the handle and starts a replica; the answer says a replica is up and serving."""
        return {"pid": os.getpid()}

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        async for item in self._engine_call(endpoint, {**body, "stream": False}):
            return _response_dict(item)
        raise RuntimeError("engine returned no response")

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any] | list[dict[str, Any]]]:
        async with contextlib.aclosing(batch_stream(self._chunks(endpoint, body), self._stream_batch_ms)) as items:
            async for item in items:
                yield item

    async def _chunks(self, endpoint: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        body = {**body, "stream": True}
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        async with contextlib.aclosing(self._engine_call(endpoint, body)) as items:
            async for item in items:
                if not isinstance(item, str):
                    yield _response_dict(item)  # an ErrorResponse before any chunk
                    return
                for line in item.splitlines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:].strip()
                    if data == _DONE:
                        return
                    yield json.loads(data)

    async def _engine_call(self, endpoint: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        from ray.llm._internal.serve.core.configs.openai_api_models import (
            ChatCompletionRequest,
            CompletionRequest,
        )

        request_cls = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
        request = request_cls(**body)
        gen = await self._run_request(request, engine_method=endpoint, batch_output_stream=False)
        async for item in gen:
            yield item


def _response_dict(item: Any) -> dict[str, Any]:
    data = item.model_dump(exclude_none=True) if hasattr(item, "model_dump") else dict(item)
    if "error" in data and "choices" not in data:
        err = data["error"]
        from deployments.contracts import BadRequest, UpstreamError

        status = int(err.get("code") or 500)
        cls = BadRequest if 400 <= status < 500 else UpstreamError
        raise cls(f"model engine: {err.get('message', 'error')}", code="engine_error")
    return data
