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


class _NoRayContext:
    """ray.get_runtime_context() stand-in: the real one starts a Ray outside a Ray worker."""

    runtime_env: dict[str, object] = {}


def _built(app: object) -> tuple[object, object]:
    d = app._bound_deployment  # type: ignore[attr-defined]
    return d._deployment_config, d._replica_config


def test_cpu_model_build_imports_no_vllm_and_matches_ray_serve_llm(monkeypatch) -> None:
    """The builder's light path (no vLLM in `serve run`'s build task) gives the deployment that
    ray.serve.llm's build_llm_deployment gives, for fixed replicas and for autoscaling."""
    import subprocess
    import sys

    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: _NoRayContext())
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from deployments.vllm import build_model_deployment
    from deployments.vllm_server import RouterLLMServer

    for over in ({"num_replicas": 2}, {"autoscaling": {"min_replicas": 0, "max_replicas": 2}}):
        m = entry(**over, cpu={"replica_cpus": 0.25, "engine_cpus": 0.5, "omp_threads_bind": "1"})
        ours = build_model_deployment(m, "/models/m1", "1")
        ray_llm = build_llm_deployment(llm_config(m, "/models/m1", "1"), name_prefix="model:",
                                       override_serve_options={"name": "model-m1"})
        (dc, rc), (rdc, rrc) = _built(ours), _built(ray_llm)
        assert ours._bound_deployment.name == ray_llm._bound_deployment.name == "model-m1"  # type: ignore[attr-defined]
        assert dc.model_dump() == rdc.model_dump(), over
        for field in ("ray_actor_options", "placement_group_bundles", "placement_group_strategy",
                      "max_replicas_per_node"):
            assert getattr(rc, field) == getattr(rrc, field), field
        assert rc.deployment_def == "deployments.vllm_server.RouterLLMServer"  # imported in the replica
        cfg = LLMConfig(**rc.init_kwargs["llm_config"])  # what RouterLLMServer.__init__ builds
        assert cfg.model_dump() == rrc.init_kwargs["llm_config"].model_dump()
        assert cfg.server_cls is RouterLLMServer
    # and the builder's own imports stay light: a fresh interpreter, as in the build task
    code = ("import sys, ray\n"
            "ray.get_runtime_context = lambda: type('C', (), {'runtime_env': {}})()\n"
            "from deployments.local_config import LocalModelConfig\n"
            "from deployments.vllm import build_model_deployment\n"
            "m = LocalModelConfig.model_validate({'id': 'm1', 'source': '/m', 'input_price_per_mtok': 0,"
            " 'output_price_per_mtok': 0})\n"
            "build_model_deployment(m, '/m', '0')\n"
            "print(sorted(k for k in ('vllm', 'torch', 'transformers') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _child_checks(fd: int) -> None:
    import stat as st

    import vllm.utils.system_utils as su

    ok = (os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "fork" and su.is_in_ray_actor() is False
          and st.S_ISCHR(os.fstat(fd).st_mode))  # the inherited socket now points at /dev/null
    os._exit(0 if ok else 3)


def test_engine_core_is_forked_with_inherited_sockets_dropped(monkeypatch) -> None:
    import socket

    import vllm.v1.engine.utils as engine_utils

    from deployments.vllm_plugin import fork_engine_core

    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # as vLLM's CPU platform leaves it
    original = engine_utils.get_mp_context
    a, b = socket.socketpair()  # stands in for the replica's Ray connections
    try:
        with fork_engine_core():
            ctx = engine_utils.get_mp_context()
            assert ctx.get_start_method() == "fork"
            p = ctx.Process(target=_child_checks, args=(a.fileno(),))
            p.start()
            p.join(60)
        assert p.exitcode == 0
        assert engine_utils.get_mp_context is original  # vLLM's own choice again outside the start
        a.send(b"x")  # the parent's socket is untouched
        assert b.recv(1) == b"x"
    finally:
        a.close()
        b.close()
