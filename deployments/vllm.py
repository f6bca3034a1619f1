"""vLLM model deployments on ray.serve.llm, one per local model entry.

We use ray.serve.llm's LLMConfig / LLMServer as they are and add one thin subclass, `RouterLLMServer`,
for a need LLMServer does not meet: a dict-in, dict-out call. LLMServer.chat takes vLLM's request objects
and, when streaming, yields batches of pre-rendered SSE strings; our ingress would then have to import
vLLM and re-parse every chunk. The subclass builds the request and parses chunks inside the model
replica (spreading that CPU over the model's replicas), skips LLMServer's output batching (it delays the
first token we measure TTFT on), and only plain dicts cross the handle.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from deployments.local_config import EngineConfig
from deployments.vllm_plugin import FLAG as FORK_FLAG

_DONE = "[DONE]"


def omp_bind(models: list[EngineConfig]) -> dict[str, str]:
    """VLLM_CPU_OMP_THREADS_BIND per CPU model: 'auto' gives each engine its own core, round robin.

    A model in its own application cannot see the others, so its place in the round comes from
    `cpu.auto_index` when set (else its position in `models`)."""
    cores = os.cpu_count() or 1
    binds: dict[str, str] = {}
    nxt = 0
    for m in models:
        if m.accelerator != "cpu":
            continue
        if m.cpu.omp_threads_bind != "auto":
            binds[m.id] = m.cpu.omp_threads_bind
        else:
            binds[m.id] = str((nxt if m.cpu.auto_index is None else m.cpu.auto_index) % cores)
            nxt += 1
    return binds


def llm_config(model: EngineConfig, path: str, omp_threads_bind: str | None) -> Any:
    """Build the ray.serve.llm LLMConfig for one model entry."""
    from ray.serve.llm import LLMConfig

    engine_kwargs: dict[str, Any] = {"max_model_len": model.context_window}
    deployment: dict[str, Any] = {"max_ongoing_requests": model.max_ongoing_requests}
    if model.autoscaling is not None:
        deployment["autoscaling_config"] = model.autoscaling.model_dump(exclude_none=True)
    else:
        deployment["num_replicas"] = model.num_replicas or 1
    if model.max_replicas_per_node is not None:
        deployment["max_replicas_per_node"] = model.max_replicas_per_node
    extra: dict[str, Any] = {}
    if model.accelerator == "cpu":
        if model.kv_cache_memory_bytes is not None:
            engine_kwargs["kv_cache_memory_bytes"] = model.kv_cache_memory_bytes
        deployment["ray_actor_options"] = {"num_cpus": model.cpu.replica_cpus}
        extra["accelerator_config"] = {"kind": "cpu"}
        extra["placement_group_config"] = {"bundles": [{"CPU": model.cpu.engine_cpus}]}
        env: dict[str, str] = {FORK_FLAG: "1"}  # deployments/vllm_plugin.py: fork the engine's Worker
        if omp_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = omp_threads_bind
        extra["runtime_env"] = {"env_vars": env}
    else:
        engine_kwargs["tensor_parallel_size"] = model.tensor_parallel_size
        if model.accelerator_type:
            extra["accelerator_type"] = model.accelerator_type
        if model.gpu_fraction < 1:  # ray.serve.llm runs the engine on a fractional GPU bundle
            extra["placement_group_config"] = {"bundles": [{"GPU": model.gpu_fraction}]}
    engine_kwargs.update(model.engine_kwargs)
    return LLMConfig(
        model_loading_config={"model_id": model.id, "model_source": path},
        engine_kwargs=engine_kwargs,
        deployment_config=deployment,
        server_cls=RouterLLMServer,
        log_engine_metrics=False,
        # a prepared local directory needs no per-node download task (deployments/vllm_callback.py)
        callback_config={"callback_class": "deployments.vllm_callback:PreparedModelCallback"},
        **extra,
    )


def build_model_deployment(model: EngineConfig, path: str, omp_threads_bind: str | None) -> Any:
    """A bound Serve application for one model (RouterLLMServer behind ray.serve.llm's options)."""
    from ray.serve.llm import build_llm_deployment

    cfg = llm_config(model, path, omp_threads_bind)
    return build_llm_deployment(cfg, name_prefix="model:", override_serve_options={"name": f"model-{model.id}"})


def _import_server_base() -> type:
    from ray.serve.llm import LLMServer

    return LLMServer


class RouterLLMServer(_import_server_base()):  # type: ignore[misc]
    """LLMServer plus the dict-level calls the router's ingress uses (see module docstring)."""

    async def wake(self) -> dict[str, Any]:
        """The router's wake-up call for a model scaled to zero: Serve's autoscaler counts the call queued
        at the handle and starts a replica; the answer says a replica is up and serving."""
        return {"pid": os.getpid()}

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        async for item in self._engine_call(endpoint, {**body, "stream": False}):
            return _response_dict(item)
        raise RuntimeError("engine returned no response")

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body = {**body, "stream": True}
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        async for item in self._engine_call(endpoint, body):
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

    async def _engine_call(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[Any]:
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
