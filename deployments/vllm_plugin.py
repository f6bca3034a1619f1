"""A vLLM general plugin (entry point `vllm.general_plugins`) that saves one Python start per CPU engine.

Inside a Ray actor vLLM must spawn its EngineCore process (forking a Ray worker is unsafe), and it records
that by setting VLLM_WORKER_MULTIPROC_METHOD=spawn in the environment, which the EngineCore inherits: the
EngineCore then spawns its model Worker too, a second fresh interpreter that imports torch and vLLM again
(10-20 s on a 2-core machine, per engine). The EngineCore is not a Ray worker, so it can fork the Worker,
which is what plain `vllm serve` does on CPU.

Opt-in: it acts only where ROUTER_VLLM_FORK_WORKER=1 (set by `deployments.vllm.llm_config` in the runtime
env of CPU engines), only outside Ray actors, and only on the spawn setting vLLM itself forced.
"""

from __future__ import annotations

import os

FLAG = "ROUTER_VLLM_FORK_WORKER"


def register() -> None:
    if os.environ.get(FLAG) != "1" or os.environ.get("VLLM_WORKER_MULTIPROC_METHOD") != "spawn":
        return
    try:
        import ray

        if ray.is_initialized():  # the Serve replica itself: keep spawn
            return
    except ImportError:
        pass
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
