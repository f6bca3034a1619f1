"""What restarts what, with the cluster.yaml layout (the router app + one application per model) deployed
the way `serve deploy` / `serve run cluster.yaml` does it (a declarative config through the controller),
on fake engines: a router-only change under steady load answers every request and leaves every engine
process as it was; a model's config change restarts that model only.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from typing import Any

import httpx
import pytest

from tests.reliability.harness import (
    ROOT,
    USER_KEYS,
    chat,
    model,
    ray_serve,
    record,
    replica_actors,
    steady_load,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8230
BASE = f"http://127.0.0.1:{PORT}"
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": str(ROOT)}}  # the controller's build task imports fake_apps
ENGINE = {"ttft_s": 0.02, "token_delay_s": 0.01, "words": 8}
ALICE = {"authorization": f"Bearer {USER_KEYS['alice']}"}
BOB = {"authorization": f"Bearer {USER_KEYS['bob']}"}


def _key(name: str) -> dict[str, str]:
    return {"name": name, "key_sha256": hashlib.sha256(USER_KEYS[name].encode()).hexdigest()}


def config(min_quality: float, keys: list[str], b_engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The layout of cluster.yaml: router app first, then one application per model (no HTTP route)."""
    engines = {"local-a": {"id": "local-a", "fake": ENGINE},
               "local-b": {"id": "local-b", "fake": b_engine or ENGINE}}
    router = {
        "models": [{**model("local-a", 0.01, 0.5), "app": "model-local-a"},
                   {**model("local-b", 0.02, 0.7), "app": "model-local-b"}],
        "policy": {"name": "cheapest-fit", "min_quality": min_quality},
        "auth": {"keys": [_key(k) for k in keys]},
        "limits": {"request_timeout_s": 20},
        "ingress": {"replica_poll_s": 0.5},
    }
    apps: list[dict[str, Any]] = [{"name": "router", "route_prefix": "/", "import_path": "router.app:build",
                                   "args": router}]
    for tid, args in engines.items():
        apps.append({"name": f"model-{tid}", "route_prefix": None, "runtime_env": RUNTIME_ENV,
                     "import_path": "tests.reliability.fake_apps:engine_app", "args": args})
    return {"applications": apps}


def deploy(cfg: dict[str, Any], timeout: float = 90) -> None:
    """What `serve deploy` does (its REST API calls the same controller method), then wait for RUNNING."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(copy.deepcopy(cfg)))
    names = [a["name"] for a in cfg["applications"]]

    def running() -> bool:
        apps = serve.status().applications
        return all(n in apps and apps[n].status == "RUNNING" for n in names)

    time.sleep(1.0)  # let the controller take the new config before reading statuses
    assert wait_until(running, timeout, interval=0.5), serve.status()


def engine_pids() -> dict[str, int]:
    from ray import serve

    return {tid: serve.get_deployment_handle(f"model-{tid}", app_name=f"model-{tid}").stats.remote().result()["pid"]
            for tid in ("local-a", "local-b")}


def actors() -> dict[str, list[str]]:
    return {app: sorted(n for n, _ in replica_actors(app, dep)) for app, dep in
            [("router", "router"), ("model-local-a", "model-local-a"), ("model-local-b", "model-local-b")]}


@pytest.fixture(scope="module")
def cluster():
    with ray_serve(PORT):
        deploy(config(0.4, ["alice"]))
        yield


def _post(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(BASE + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_router_only_change_under_load_restarts_no_engine(cluster):
    r = _post(chat("hello"), ALICE)
    assert r.status_code == 200 and r.headers["x-router-target"] == "local-a", r.text
    assert _post(chat("hello"), BOB).status_code == 401
    pids, before = engine_pids(), actors()

    async def scenario():
        load = asyncio.create_task(steady_load(
            BASE, "/v1/chat/completions", [chat("count"), chat("count", stream=True)], rate=10, duration_s=14,
            headers=ALICE, timeout=30))
        await asyncio.sleep(2)
        # A changed policy threshold and a new API key: router-only settings.
        t0 = time.monotonic()
        await asyncio.to_thread(deploy, config(0.6, ["alice", "bob"]))
        return await load, time.monotonic() - t0

    tally, reload_s = asyncio.run(scenario())
    after = actors()
    record("router-only reload (policy threshold + new key) under load, fake engines in own apps", tally,
           reload_s=round(reload_s, 1))
    assert tally.outcomes == {"ok": tally.sent} and tally.sent >= 120, (tally.row(), tally.problems[:5])
    assert after["router"] != before["router"]  # the router app was redeployed ...
    assert {k: v for k, v in after.items() if k != "router"} == {k: v for k, v in before.items() if k != "router"}
    assert engine_pids() == pids  # ... and no engine process was touched
    # The new settings are live: bob's key works, the threshold moved auto traffic to local-b.
    r = _post(chat("hello"), BOB)
    assert r.status_code == 200 and r.headers["x-router-target"] == "local-b", r.text


def test_model_change_restarts_that_model_only(cluster):
    deploy(config(0.6, ["alice", "bob"]))  # the state the previous test left (idempotent on its own)
    pids, before = engine_pids(), actors()
    pinned_a = {**chat("count"), "routing": {"min_quality": 0.4}}  # the request's bound wins: local-a

    async def scenario():
        load = asyncio.create_task(steady_load(BASE, "/v1/chat/completions", [pinned_a], rate=8, duration_s=10,
                                               headers=ALICE, timeout=30))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(deploy, config(0.6, ["alice", "bob"], b_engine={**ENGINE, "words": 6}))
        return await load

    tally = asyncio.run(scenario())
    after, new_pids = actors(), engine_pids()
    record("model-b config change under load on model-a", tally)
    assert new_pids["local-b"] != pids["local-b"] and after["model-local-b"] != before["model-local-b"]
    assert new_pids["local-a"] == pids["local-a"] and after["model-local-a"] == before["model-local-a"]
    assert after["router"] == before["router"]  # its args did not change: not redeployed
    assert tally.outcomes == {"ok": tally.sent}, (tally.row(), tally.problems[:5])
    assert set(tally.targets) == {"local-a"}, tally.row()
    r = _post({**chat("count"), "model": "local-b"}, ALICE)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 6  # the new engine config
