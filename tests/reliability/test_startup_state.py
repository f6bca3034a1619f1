"""Start-up says what it is doing (issue 12, item 10): while a model is still loading the router reports
it `starting` (GET /v1/models, /healthz), answers 503 `router_starting` with a Retry-After, and logs
`router: model '<id>' is up` once it can answer. Fake engine in its own application, with a 20 s start-up
(as `serve run cluster.yaml` lays real engines out).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.harness import chat, model, ray_serve, wait_until
from tests.reliability.test_reload import RUNTIME_ENV

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8260
BASE = f"http://127.0.0.1:{PORT}"
STARTUP_S = 20.0


def config() -> dict[str, Any]:
    slow = {**model("slow", 0.01, 0.5), "app": "model-slow"}
    router = {"models": [slow], "ingress": {"replica_poll_s": 0.5}}
    return {"applications": [
        {"name": "router", "route_prefix": "/", "import_path": "router.app:build", "args": router},
        {"name": "model-slow", "route_prefix": None, "runtime_env": RUNTIME_ENV,
         "import_path": "tests.reliability.fake_apps:engine_app",
         "args": {"id": "slow", "startup_s": STARTUP_S, "fake": {"ttft_s": 0.02, "token_delay_s": 0.01}}},
    ]}


def _router_up() -> bool:
    try:
        return httpx.get(BASE + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_starting_state_retry_after_and_up_log():
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    with ray_serve(PORT) as tmp:
        t0 = time.monotonic()
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(copy.deepcopy(config())))
        assert wait_until(_router_up, 60, interval=0.5)
        health = httpx.get(BASE + "/healthz", timeout=5)
        assert time.monotonic() - t0 < STARTUP_S, "the router came up after the model: nothing to observe"
        assert health.json()["status"] == "starting" and health.json()["targets"] == {"slow": "starting"}
        assert health.headers["retry-after"] == "10"
        models = httpx.get(BASE + "/v1/models", timeout=5).json()["data"]
        assert [m["state"] for m in models if m["id"] == "slow"] == ["starting"]
        for body in (chat("hi", max_tokens=3), chat("hi", model="slow", max_tokens=3)):
            r = httpx.post(BASE + "/v1/chat/completions", json=body, timeout=10)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "router_starting" and r.headers["retry-after"] == "10"
            assert "starting" in r.json()["error"]["message"]
        assert wait_until(lambda: httpx.get(BASE + "/healthz", timeout=5).json()["status"] == "ok", 120)
        r = httpx.post(BASE + "/v1/chat/completions", json=chat("hi", max_tokens=3), timeout=30)
        assert r.status_code == 200 and r.headers["x-router-target"] == "slow", r.text
        time.sleep(2)  # let log lines flush

        def logged() -> bool:
            return any(b"router: model 'slow' is up" in p.read_bytes()
                       for p in Path(tmp).rglob("*.log") if p.is_file())

        assert wait_until(logged, 10)
