"""The ray.serve.llm config one model entry becomes (no engine is started)."""

from __future__ import annotations

import os

from deployments.local_config import LocalModelConfig
from deployments.vllm import llm_config, omp_bind


def entry(**over: object) -> LocalModelConfig:
    base = {"id": "m1", "source": "/models/m1", "context_window": 1024, "input_price_per_mtok": 0.1,
            "output_price_per_mtok": 0.2}
    return LocalModelConfig.model_validate({**base, **over})


def test_cpu_entry_gets_fractional_resources_kv_cache_and_its_own_core() -> None:
    m = entry(num_replicas=2, cpu={"replica_cpus": 0.25, "engine_cpus": 0.5, "omp_threads_bind": "auto"})
    cfg = llm_config(m, "/models/m1", omp_bind([m])["m1"])
    dep = cfg.deployment_config
    assert dep["num_replicas"] == 2 and "max_replicas_per_node" not in dep
    assert dep["ray_actor_options"] == {"num_cpus": 0.25}
    assert cfg.placement_group_config == {"bundles": [{"CPU": 0.5}]}
    assert cfg.engine_kwargs["kv_cache_memory_bytes"] == 256 * 2**20
    assert cfg.engine_kwargs["max_model_len"] == 1024
    assert cfg.runtime_env["env_vars"] == {"VLLM_CPU_OMP_THREADS_BIND": "0", "ROUTER_VLLM_FORK_WORKER": "1"}


def test_max_replicas_per_node_spreads_replicas() -> None:
    cfg = llm_config(entry(num_replicas=4, max_replicas_per_node=1), "/models/m1", None)
    assert cfg.deployment_config["max_replicas_per_node"] == 1
    assert cfg.deployment_config["num_replicas"] == 4


def test_fork_plugin_only_switches_a_forced_spawn_outside_ray(monkeypatch) -> None:
    from importlib.metadata import entry_points

    from deployments import vllm_plugin

    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names.get("router_fork_worker") == "deployments.vllm_plugin:register"  # installed, vLLM finds it
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    monkeypatch.delenv("ROUTER_VLLM_FORK_WORKER", raising=False)
    vllm_plugin.register()
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"  # not opted in: untouched
    monkeypatch.setenv("ROUTER_VLLM_FORK_WORKER", "1")
    vllm_plugin.register()
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"  # the EngineCore (Ray not initialised here)


def test_prepared_local_model_skips_the_download_task(tmp_path) -> None:
    import asyncio

    import ray

    from deployments.vllm_callback import PreparedModelCallback

    cfg = llm_config(entry(), str(tmp_path), None)  # an existing directory, as prepare-models leaves it
    assert cfg.callback_config.callback_class == "deployments.vllm_callback:PreparedModelCallback"
    cb = PreparedModelCallback(llm_config=cfg)  # built directly: get_or_create_callback() starts Ray
    asyncio.run(cb.on_before_node_init())
    assert cb.ctx.run_init_node is False
    hub = PreparedModelCallback(llm_config=llm_config(entry(source="org/model"), "org/model", None))
    asyncio.run(hub.on_before_node_init())  # not on disk: ray.serve.llm downloads it as usual
    assert hub.ctx.run_init_node is True
    assert not ray.is_initialized()  # unit tests must not leave a Ray behind for later ones
