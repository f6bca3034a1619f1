"""Fake engines as Serve applications of their own, built from a config file's import path, the way
`router.app:build_model` builds a real one: for the reload and scale-from-zero tests.

`engine_app(args)`: args {"id", "startup_s" (seconds the replica takes to start, like an engine loading),
"fake" (FakeEngine's timing), "num_replicas" or "autoscaling" (Serve's autoscaling_config)}. The
deployment is named model-<id>, as the router expects. The replica adds `wake()` (RouterLLMServer's
wake-up call) and reports its start time in `stats()`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ray import serve

from tests.support.fake_engine import FakeEngine


class _SlowStartEngine(FakeEngine.func_or_class):  # type: ignore[misc,name-defined]
    def __init__(self, tid: str, startup_s: float = 0.0, **fake: Any) -> None:
        time.sleep(startup_s)  # an engine loading its weights: the replica is not RUNNING before this ends
        super().__init__(tid, **fake)
        self.started_at = time.time()

    async def wake(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "started_at": self.started_at}


SlowStartEngine = serve.deployment(_SlowStartEngine, max_ongoing_requests=128,
                                   ray_actor_options={"num_cpus": 0.05})


def engine_app(args: dict[str, Any]) -> Any:
    opts: dict[str, Any] = {"name": f"model-{args['id']}"}
    if args.get("autoscaling"):
        opts["autoscaling_config"] = args["autoscaling"]
    else:
        opts["num_replicas"] = args.get("num_replicas", 1)
    return SlowStartEngine.options(**opts).bind(args["id"], float(args.get("startup_s", 0.0)),
                                                **(args.get("fake") or {}))
