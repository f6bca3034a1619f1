"""Ray Serve LLM's own OpenAI app (`build_openai_app`) in front of a fake engine, for the overhead benchmark.

LLMServer takes its engine class from `LLMServer._default_engine_cls` (the documented escape hatch for
tests, also settable through RAYLLM_VLLM_ENGINE_CLS); `FakeEngine` implements the `LLMEngine` protocol
with the same fixed latency as `benchmarks.fake_engine.FakeLLM`, returning vLLM's response models, so
OpenAiIngress -> LLMServer runs unchanged with no model loaded.

The latency travels inside the LLMConfig (`experimental_configs["fake_engine"]`, a free-form dict Ray
Serve LLM ignores for unknown keys), because the engine runs in the replica's process: module globals set
by the driver would not reach it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.llm._internal.serve.core.server.llm_server import LLMServer

DEFAULTS = {"ttft_s": 0.005, "token_delay_s": 0.001, "tokens": 16}


class FakeEngine(LLMEngine):
    def __init__(self, llm_config: Any) -> None:
        self.model_id = llm_config.model_id
        cfg = {**DEFAULTS, **llm_config.experimental_configs.get("fake_engine", {})}
        self.ttft_s = float(cfg["ttft_s"])
        self.token_delay_s = float(cfg["token_delay_s"])
        self.tokens = int(cfg["tokens"])

    async def start(self) -> None:
        return None

    def routing_stats(self) -> dict:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def reset_prefix_cache(self) -> None:
        return None

    def _n(self, request: Any) -> int:
        return max(1, min(int(getattr(request, "max_tokens", None) or self.tokens), self.tokens))

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionResponse

        n = self._n(request)
        await asyncio.sleep(self.ttft_s + (n - 1) * self.token_delay_s)
        p = sum(len(str(m.get("content", "") if isinstance(m, dict) else "").split())
                for m in request.messages)
        yield ChatCompletionResponse(
            id="fake-1", object="chat.completion", created=int(time.time()), model=self.model_id,
            choices=[{"index": 0, "message": {"role": "assistant", "content": " ".join(["tok"] * n)},
                      "finish_reason": "length"}],
            usage={"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n},
        )

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError
        yield  # pragma: no cover


class FakeLLMServer(LLMServer):
    _default_engine_cls = FakeEngine


def build(model_dir: str, model_id: str = "fake-a", ttft_s: float = 0.005, token_delay_s: float = 0.001,
          tokens: int = 16) -> Any:
    """OpenAiIngress -> FakeLLMServer; 0.1 CPU each, like the other fake paths' deployments."""
    from ray.serve.llm import LLMConfig, build_openai_app

    cfg = LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_dir},
        server_cls=FakeLLMServer,
        accelerator_config={"kind": "cpu"},
        placement_group_config={"bundles": [{"CPU": 0.1}]},
        deployment_config={"max_ongoing_requests": 1024, "num_replicas": 1,
                           "ray_actor_options": {"num_cpus": 0.1}},
        log_engine_metrics=False,
        experimental_configs={"fake_engine": {"ttft_s": ttft_s, "token_delay_s": token_delay_s, "tokens": tokens}},
    )
    return build_openai_app({"llm_configs": [cfg],
                             "ingress_deployment_config": {"max_ongoing_requests": 1024,
                                                           "ray_actor_options": {"num_cpus": 0.1}}})
