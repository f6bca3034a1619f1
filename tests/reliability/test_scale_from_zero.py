"""Scale from zero, driven by the router, on fake engines that take `STARTUP_S` to start (deployed in the
cluster.yaml layout through the controller, as `serve run` does):

- a model with `autoscaling.min_replicas: 0` and no replica shows "cold" in GET /v1/models;
- a request for which it is the policy's pick is answered within its latency bound by the warm alternate,
  and the router wakes the cold model (Serve's autoscaler counts the wake-up call queued at the handle);
- /v1/models shows it "warming", then "healthy"; later requests go to it;
- the measured start-up replaces the cold-start prior; after Serve scales it back to zero it is "cold"
  again, and a request pinned to it waits for the start-up and is answered by it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.reliability.harness import chat, model, ray_serve, record, wait_until
from tests.reliability.test_reload import RUNTIME_ENV, deploy

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8240
BASE = f"http://127.0.0.1:{PORT}"
STARTUP_S = 6.0
PRIOR_S = 20.0
BOUND = {"routing": {"max_latency_ms": 3000}}
FAKE = {"ttft_s": 0.02, "token_delay_s": 0.01, "words": 8}
SCALE = {"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0, "upscale_delay_s": 0,
         "downscale_delay_s": 2, "look_back_period_s": 2, "metrics_interval_s": 1}


def config() -> dict[str, Any]:
    cheap = {**model("cheap", 0.01, 0.5), "num_replicas": None, "app": "model-cheap", "cold_start_s": PRIOR_S,
             "autoscaling": {"min_replicas": 0, "max_replicas": 1}}
    warm = {**model("warm", 0.05, 0.5), "app": "model-warm"}
    router = {"models": [cheap, warm], "ingress": {"replica_poll_s": 0.5}, "limits": {"request_timeout_s": 30}}
    return {"applications": [
        {"name": "router", "route_prefix": "/", "import_path": "router.app:build", "args": router},
        {"name": "model-cheap", "route_prefix": None, "runtime_env": RUNTIME_ENV,
         "import_path": "tests.reliability.fake_apps:engine_app",
         "args": {"id": "cheap", "startup_s": STARTUP_S, "fake": FAKE, "autoscaling": SCALE}},
        {"name": "model-warm", "route_prefix": None, "runtime_env": RUNTIME_ENV,
         "import_path": "tests.reliability.fake_apps:engine_app", "args": {"id": "warm", "fake": FAKE}},
    ]}


def states() -> dict[str, str]:
    data = httpx.get(BASE + "/v1/models", timeout=10).json()["data"]
    return {m["id"]: m.get("state", "") for m in data if m["id"] != "auto"}


def ingress_stats() -> dict[str, Any]:
    from ray import serve

    return serve.get_deployment_handle("router", app_name="router").stats.remote().result()


def ask(body: dict[str, Any]) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.post(BASE + "/v1/chat/completions", json=body, timeout=60)
    return r, time.monotonic() - t0


@pytest.fixture(scope="module")
def cluster():
    with ray_serve(PORT):
        deploy(config())
        yield


def test_cold_model_is_woken_served_meanwhile_and_takes_over(cluster):
    assert wait_until(lambda: states() == {"cheap": "cold", "warm": "healthy"}, 20), states()
    seen: list[str] = []

    r, took = ask({**chat("hello"), **BOUND})
    assert r.status_code == 200, r.text
    assert r.headers["x-router-target"] == "warm" and took < 3.0  # within its bound, by the alternate
    assert r.headers["x-router-reason"] == "cheapest-fit+waking:cheap"
    woken_at = time.monotonic()

    def up() -> bool:
        s = states()["cheap"]
        if not seen or seen[-1] != s:
            seen.append(s)
        return s == "healthy"

    assert wait_until(up, 40, interval=0.2), seen
    assert seen[0] == "warming", seen  # cold -> warming -> healthy
    assert time.monotonic() - woken_at >= STARTUP_S - 1
    # Meanwhile-requests went to the alternate; now traffic is back on the cheap model.
    r, _ = ask({**chat("hello"), **BOUND})
    assert r.status_code == 200 and r.headers["x-router-target"] == "cheap", r.headers
    cold = ingress_stats()["cold_start"]["cheap"]
    assert cold["measured"] == 1 and STARTUP_S - 1 <= cold["seconds"] < PRIOR_S, cold
    record("scale from zero: cold model woken, alternate answered, traffic returned",
           {"sent": 2, "answered": 2, "errored": 0, "lost": 0}, states_seen=seen,
           measured_cold_start_s=cold["seconds"])


def test_scaled_back_to_zero_then_a_pinned_request_waits_for_the_start_up(cluster):
    assert wait_until(lambda: states()["cheap"] == "healthy", 40)
    # Idle: Serve scales it back to zero (downscale_delay_s 2) and the poll reports it cold again.
    assert wait_until(lambda: states()["cheap"] == "cold", 90, interval=1.0), states()
    r, took = ask({**chat("hello"), "model": "cheap"})
    assert r.status_code == 200 and r.headers["x-router-target"] == "cheap", r.text
    assert took >= STARTUP_S - 1  # it waited for the start-up rather than failing
    cold = ingress_stats()["cold_start"]["cheap"]
    assert cold["measured"] == 2, cold
    assert states()["cheap"] == "healthy"
