"""Fewer interpreter starts per CPU engine: its EngineCore and model Worker are forked, not spawned.

A vLLM engine under ray.serve.llm runs in three processes: the Serve replica (which imports torch and
vLLM to build the engine's config and client), the EngineCore, and the model Worker. vLLM *spawns* the
EngineCore and the Worker on CPU (its CPU platform sets VLLM_WORKER_MULTIPROC_METHOD=spawn, and inside a
Ray actor it forces spawn anyway), so each is a fresh interpreter importing torch and vLLM again: 10-20 s
each on a 2-core machine, per engine, while the replica has all of it in memory already.

- `fork_engine_core()`: while the replica starts its AsyncLLM, the EngineCore is forked from the replica.
  vLLM forbids that inside Ray actors because a forked child must not use the parent's Ray connection;
  the EngineCore (multiproc executor, CPU) never calls Ray, and the child drops the sockets it inherited
  (Ray's, so a dead replica is seen as dead) before running anything (`_in_forked_engine_core`).
- `register()`: a vLLM general plugin (entry point `vllm.general_plugins`) for an EngineCore that was
  spawned anyway (GPU engines are not affected: only CPU engines get the flag): it switches the
  forced spawn back to fork, so the EngineCore forks its Worker as plain `vllm serve` does.

Both act only where ROUTER_VLLM_FORK_WORKER=1, which `deployments.vllm` sets in the runtime env of CPU
engines; ROUTER_VLLM_FORK_ENGINE_CORE=0 in the environment of `serve run` turns the EngineCore fork off.
This module imports no vLLM at import time (vLLM loads it as a plugin in every process).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing.context as mpc
import os
import stat
from collections.abc import Iterator

FLAG = "ROUTER_VLLM_FORK_WORKER"
ENGINE_CORE_FLAG = "ROUTER_VLLM_FORK_ENGINE_CORE"

_inherited_sockets: frozenset[int] = frozenset()


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


def engine_core_fork_enabled() -> bool:
    return os.environ.get(FLAG) == "1" and os.environ.get(ENGINE_CORE_FLAG, "1") != "0"


def socket_fds() -> frozenset[int]:
    """The socket file descriptors open in this process (Linux /proc; empty elsewhere)."""
    fds = set()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return frozenset()
    for name in names:
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                fds.add(int(name))
        except OSError:  # the listing's own descriptor, already closed
            pass
    return frozenset(fds)


def _in_forked_engine_core(inherited: frozenset[int]) -> None:
    """First thing in the forked EngineCore, before vLLM's code runs."""
    # Point the replica's sockets (Ray's raylet/GCS/gRPC connections, asyncio self-pipes) at /dev/null:
    # the replica's peers then see it go when it dies, and the numbers stay taken, so a stale object of
    # the parent's copied memory can never write to or close a descriptor vLLM opens later.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in inherited:
        if fd != null:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    # The parent's objects stay where they are: never collected here (a Ray object's finaliser would
    # call into Ray's C++ core, whose threads did not survive the fork).
    gc.freeze()
    # This process is no Ray worker: its Worker may be forked too (vLLM checks for a Ray actor).
    import vllm.utils.system_utils as system_utils

    system_utils.is_in_ray_actor = lambda: False  # type: ignore[attr-defined]
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"


class _EngineCoreProcess(mpc.ForkProcess):
    def run(self) -> None:
        _in_forked_engine_core(_inherited_sockets)
        super().run()


class _EngineCoreContext(mpc.ForkContext):
    Process = _EngineCoreProcess  # type: ignore[assignment]


@contextlib.contextmanager
def fork_engine_core() -> Iterator[None]:
    """Around AsyncLLM's construction in the replica: its EngineCore process is forked from here."""
    global _inherited_sockets
    import vllm.v1.engine.utils as engine_utils

    original = engine_utils.get_mp_context
    _inherited_sockets = socket_fds()
    engine_utils.get_mp_context = _EngineCoreContext  # called with no argument, returns the context
    try:
        yield
    finally:
        engine_utils.get_mp_context = original
