"""vLLM model deployments on ray.serve.llm, one per local model entry.

The replica runs `deployments.vllm_server.RouterLLMServer` (ray.serve.llm's LLMServer plus the dict-level
calls the ingress uses). This module only describes it and imports no vLLM, torch or ray.serve.llm at
import time: `serve run` builds each model application in a Ray task of its own, and on a 2-core machine
importing ray.serve.llm there (which pulls in torch and vLLM: 15-25 s per model, the builds running at
once) delayed every engine's start. For CPU engines the builder therefore names the server class by
import path and passes the LLMConfig as a dict, and computes the Serve options ray.serve.llm would
(`cpu_deployment_options`; tests/unit/deployments/test_vllm_config.py checks they are equal). GPU engines
keep ray.serve.llm's own builder.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from deployments.local_config import EngineConfig
from deployments.vllm_plugin import FLAG as FORK_FLAG

SERVER_CLS = "deployments.vllm_server.RouterLLMServer"  # Serve splits at the last dot


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


def llm_config_args(model: EngineConfig, path: str, omp_threads_bind: str | None) -> dict[str, Any]:
    """The ray.serve.llm LLMConfig fields for one model entry, as plain data (no import of LLMConfig)."""
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
    return {
        "model_loading_config": {"model_id": model.id, "model_source": path},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment,
        "server_cls": SERVER_CLS,
        "log_engine_metrics": False,
        # a prepared local directory needs no per-node download task (deployments/vllm_callback.py)
        "callback_config": {"callback_class": "deployments.vllm_callback:PreparedModelCallback"},
        **extra,
    }


def llm_config(model: EngineConfig, path: str, omp_threads_bind: str | None) -> Any:
    """The ray.serve.llm LLMConfig for one model entry (imports torch: not for the build task)."""
    from ray.serve.llm import LLMConfig

    return LLMConfig(**llm_config_args(model, path, omp_threads_bind))


def cpu_deployment_options(args: dict[str, Any], name: str) -> dict[str, Any]:
    """The Serve options ray.serve.llm's build_llm_deployment gives a CPU engine (LLMServer's
    get_deployment_options plus the builder's defaults), from `llm_config_args` alone."""
    import ray
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.constants import (
        DEFAULT_HEALTH_CHECK_PERIOD_S,
        DEFAULT_HEALTH_CHECK_TIMEOUT_S,
        DEFAULT_MAX_ONGOING_REQUESTS,
        DEFAULT_MAX_TARGET_ONGOING_REQUESTS,
        ENABLE_WORKER_PROCESS_SETUP_HOOK,
    )

    options = copy.deepcopy(args["deployment_config"])
    actor = options.get("ray_actor_options", {})
    # The replica shares the engine's placement group: its resources join the first bundle.
    replica = {"CPU": actor.get("num_cpus", 1), "GPU": actor.get("num_gpus", 0), **actor.get("resources", {})}
    if "memory" in actor:
        replica["memory"] = actor["memory"]
    pg = args.get("placement_group_config") or {}
    bundles = [dict(b) for b in pg.get("bundles") or []]
    if bundles:
        first = bundles[0]
        bundles[0] = {k: first.get(k, 0) + replica.get(k, 0) for k in set(first) | set(replica)}
    else:
        bundles = [replica]
    options["placement_group_bundles"] = bundles
    options["placement_group_strategy"] = pg.get("strategy", "PACK")
    runtime_env = dict(ray.get_runtime_context().runtime_env)
    if ENABLE_WORKER_PROCESS_SETUP_HOOK:
        runtime_env["worker_process_setup_hook"] = "ray.llm._internal.serve._worker_process_setup_hook"
    actor = options.get("ray_actor_options", {})
    actor["runtime_env"] = {**runtime_env, **actor.get("runtime_env", {}), **(args.get("runtime_env") or {})}
    options["ray_actor_options"] = actor
    options["name"] = name
    defaults = {
        "max_ongoing_requests": DEFAULT_MAX_ONGOING_REQUESTS,
        "health_check_period_s": DEFAULT_HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": DEFAULT_HEALTH_CHECK_TIMEOUT_S,
        "autoscaling_config": {"target_ongoing_requests": DEFAULT_MAX_TARGET_ONGOING_REQUESTS},
    }
    return maybe_apply_llm_deployment_config_defaults(defaults, options)


def build_model_deployment(model: EngineConfig, path: str, omp_threads_bind: str | None) -> Any:
    """A bound Serve application for one model (RouterLLMServer behind ray.serve.llm's options)."""
    name = f"model-{model.id}"
    args = llm_config_args(model, path, omp_threads_bind)
    if model.accelerator != "cpu":
        from ray.serve.llm import build_llm_deployment

        return build_llm_deployment(llm_config(model, path, omp_threads_bind), name_prefix="model:",
                                    override_serve_options={"name": name})
    from ray import serve

    # Serve imports a deployment named by import path in the replica, not here (ray.serve's
    # ReplicaConfig takes "module:attr" strings); the stand-in only carries the options to .options().
    options = cpu_deployment_options(args, name)
    deployment: Any = serve.deployment(_StandIn, **options)
    return deployment.options(func_or_class=SERVER_CLS).bind(llm_config=args)


class _StandIn:
    """Replaced by SERVER_CLS before the deployment is bound (never instantiated)."""


def __getattr__(name: str) -> Any:
    if name == "RouterLLMServer":  # the class lives in deployments.vllm_server (imports vLLM)
        from deployments.vllm_server import RouterLLMServer

        return RouterLLMServer
    raise AttributeError(name)
