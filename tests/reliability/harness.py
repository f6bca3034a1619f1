"""Shared pieces of the reliability suite: an isolated Ray + Serve, apps on fake engines, and a load
client that gives every request exactly one outcome.

Outcomes: "ok" (a complete answer), "http_<status>" (an error response with an OpenAI-style body),
"stream_error" (a stream that started and ended with an `{"error": ...}` event and `[DONE]`), and
"lost" (no response, a dropped connection, a stream without `[DONE]`, an error without a proper body).
accepted = answered + errored; lost must be 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "sk-prov-SECRET-9f2c41d7e0"  # must never show up in logs or responses
PROVIDER_KEY_ENV = "RELIABILITY_PROVIDER_KEY"
LEDGER_DIR = Path(tempfile.gettempdir()) / f"rr-ledger-{os.getpid()}"  # one per test session
USER_KEYS = {"alice": "rk-alice-3b8f0e", "bob": "rk-bob-77c1aa", "carol": "rk-carol-0d9e55"}


@contextmanager
def ray_serve(port: int, *, num_cpus: int = 8) -> Iterator[Path]:
    """An own local Ray (isolated temp dir, so its logs are ours to grep) with Serve on 127.0.0.1:port."""
    import ray
    from ray import serve

    tmp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))
    # The provider key reaches the replicas by inheritance from this process's environment, as with
    # `serve run`. Not through runtime_env env_vars: Ray writes those to runtime_env_agent.log.
    os.environ[PROVIDER_KEY_ENV] = PROVIDER_KEY
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(tmp),
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield tmp
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


def serve_cluster(port: int) -> Any:
    """A module-scoped `cluster` fixture: `ray_serve(port)` for the tests of one module (yields its temp
    dir). Use as `cluster = serve_cluster(PORT)` at module level."""
    import pytest

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[Path]:
        with ray_serve(port) as tmp:
            yield tmp

    return cluster


def model(tid: str, price: float, quality: float, *, ctx: int = 2048, replicas: int = 1) -> dict[str, Any]:
    """A local model entry (its engine is a FakeEngine, not vLLM)."""
    return {
        "id": tid, "source": "fake", "context_window": ctx, "input_price_per_mtok": price,
        "output_price_per_mtok": price * 2, "quality_prior": quality, "num_replicas": replicas,
        "latency": {"ttft_ms": 30, "tpot_ms": 5, "max_concurrency": 64},
    }


def provider(tid: str, base_url: str, **over: Any) -> dict[str, Any]:
    cfg = {
        "id": tid, "base_url": base_url, "model": "fake-gpt", "api_key_env": PROVIDER_KEY_ENV,
        "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6, "context_window": 8192,
        "quality_prior": 0.9,
    }
    cfg.update(over)
    return cfg


def build_app(cfg: dict[str, Any], engines: dict[str, dict[str, Any]] | None = None, *,
              engine_options: dict[str, Any] | None = None, ingress_resources: dict[str, float] | None = None
              ) -> Any:
    """The router app exactly as `router.app.build` binds it (through `build_router`, its test seams),
    with FakeEngine deployments in place of vLLM for models whose source is "fake" (others get their
    real vLLM engine, prepared beforehand by `routerctl prepare-models`). Unless the config names one,
    the budget ledger is a SQLite file in this test session's temp dir, so no run sees another's spend.

    `engine_options` are extra Serve deployment options of every fake engine (e.g. `max_replicas_per_node`,
    `ray_actor_options` with custom resources); `ingress_resources` pins the ingress to nodes that have them.
    """
    from router.app import build_router
    from tests.support.fake_engine import FakeEngine

    def fake(m: Any) -> Any:
        if m.source != "fake":
            return None
        return FakeEngine.options(
            name=f"model-{m.id}", num_replicas=m.num_replicas or 1, **(engine_options or {})
        ).bind(m.id, **(engines or {}).get(m.id, {}))

    cfg = json.loads(json.dumps(cfg))
    ledger = cfg.setdefault("auth", {}).setdefault("ledger", {})
    ledger.setdefault("url", f"sqlite:///{LEDGER_DIR}/ledger.sqlite")
    return build_router(cfg, bind_engine=fake,
                        ingress_actor_options={"resources": ingress_resources} if ingress_resources else None)


def deploy(name: str, cfg: dict[str, Any], engines: dict[str, dict[str, Any]] | None = None, **options: Any) -> str:
    """serve.run the app under /<name> (`options` go to `build_app`); returns its base URL path prefix."""
    from ray import serve

    serve.run(build_app(cfg, engines, **options), name=name, route_prefix=f"/{name}")
    return f"/{name}"


def ingress_stats(app: str) -> list[dict[str, Any]]:
    """stats() of every ingress replica of `app` (a handle call lands on one; ask until all answered)."""
    from ray import serve

    h = serve.get_deployment_handle("router", app_name=app)
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(40):
        s = h.stats.remote().result()
        seen[s.get("pid", id(s))] = s
    return list(seen.values())


def deploy_ready(name: str, cfg: dict[str, Any], engines: dict[str, dict[str, Any]] | None = None,
                 timeout_s: float = 30, **options: Any) -> str:
    """deploy(), then wait until every ingress replica's replica poll has seen every model up (a model
    still starting at the first poll reads "starting" until the next one)."""
    path = deploy(name, cfg, engines, **options)
    tids = [m["id"] for m in cfg["models"]]
    ok = wait_until(lambda: all(s["states"][t] == "healthy" for s in ingress_stats(name) for t in tids), timeout_s)
    assert ok, ingress_stats(name)
    return path


def replica_actors(app: str, deployment: str) -> list[tuple[str, str]]:
    """(name, namespace) of the live replica actors of one deployment."""
    import ray

    out = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#"):
            out.append((a["name"], a["namespace"]))
    return out


def real_model(tid: str, **over: Any) -> dict[str, Any]:
    """cluster.yaml's entry for a real local model (a vLLM CPU engine), with `over` applied."""
    import yaml

    args = yaml.safe_load((ROOT / "cluster.yaml").read_text())["applications"][0]["args"]
    (entry,) = [m for m in args["models"] if m["id"] == tid]
    entry.pop("app", None)  # bound in the test's app, not cluster.yaml's own model application
    return {**entry, **over}


def chat(text: str = "hello there", *, model: str = "auto", stream: bool = False, **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    continued: int = 0  # streams continued on an alternate after a mid-stream failure (issue 16)

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def answered(self) -> int:
        return self.outcomes["ok"]

    @property
    def lost(self) -> int:
        return self.outcomes["lost"]

    @property
    def errored(self) -> int:
        return self.sent - self.answered - self.lost

    def row(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "errored": self.errored, "lost": self.lost,
                "outcomes": dict(self.outcomes), "targets": dict(self.targets),
                "max_s": round(max(self.durations, default=0.0), 2), "continued": self.continued}

    def merge(self, other: Tally) -> None:
        self.outcomes += other.outcomes
        self.targets += other.targets
        self.durations += other.durations
        self.problems += other.problems
        self.continued += other.continued


def is_openai_error(data: Any) -> bool:
    err = data.get("error") if isinstance(data, dict) else None
    return isinstance(err, dict) and isinstance(err.get("message"), str) and "type" in err and "code" in err


async def send(client: httpx.AsyncClient, path: str, body: dict[str, Any], tally: Tally,
               headers: dict[str, str] | None = None, timeout: float = 60.0) -> str:
    """One request, classified into exactly one outcome."""
    t0 = time.monotonic()
    outcome = "lost"
    try:
        if body.get("stream"):
            outcome = await _stream(client, path, body, tally, headers, timeout)
        else:
            r = await client.post(path, json=body, headers=headers, timeout=timeout)
            if r.status_code == 200:
                data = r.json()
                ok = data.get("choices") and data.get("usage", {}).get("completion_tokens", 0) > 0
                outcome = "ok" if ok else "lost"
                tally.targets[r.headers.get("x-router-target", "?")] += 1
            else:
                data = r.json()
                outcome = f"http_{r.status_code}" if is_openai_error(data) else "lost"
                tally.problems.append(f"{r.status_code}: {str(data)[:200]}")
    except Exception as e:  # no answer at all: the accounting counts it as lost
        tally.problems.append(f"{type(e).__name__}: {e}"[:200])
        outcome = "lost"
    tally.outcomes[outcome] += 1
    tally.durations.append(time.monotonic() - t0)
    return outcome


async def _stream(client: httpx.AsyncClient, path: str, body: dict[str, Any], tally: Tally,
                  headers: dict[str, str] | None, timeout: float) -> str:
    async with client.stream("POST", path, json=body, headers=headers, timeout=timeout) as r:
        if r.status_code != 200:
            data = json.loads(await r.aread())
            return f"http_{r.status_code}" if is_openai_error(data) else "lost"
        tally.targets[r.headers.get("x-router-target", "?")] += 1
        done, error, content = False, False, 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if any(s.get("to") for s in (chunk.get("router") or {}).get("failover") or ()):
                tally.continued += 1
            if "error" in chunk:
                error = is_openai_error(chunk) or error
            elif chunk.get("choices"):
                content += 1
        if not done:
            return "lost"
        if error:
            return "stream_error"
        return "ok" if content else "lost"


async def steady_load(base: str, path: str, bodies: Sequence[dict[str, Any]], rate: float, duration_s: float,
                      headers: dict[str, str] | None = None, timeout: float = 60.0,
                      client: httpx.AsyncClient | None = None) -> Tally:
    """Open-loop load: `rate` requests/s for `duration_s`, cycling through `bodies`; waits for all."""
    tally = Tally()
    own = client is None
    client = client or httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=500))
    tasks = []
    try:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < duration_s:
            tasks.append(asyncio.create_task(send(client, path, bodies[i % len(bodies)], tally, headers,
                                                  timeout)))
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    finally:
        if own:
            await client.aclose()
    return tally


def record(scenario: str, tally_or_row: Tally | dict[str, Any], **extra: Any) -> None:
    """Append one measured row to $RELIABILITY_RESULTS (JSON lines) for RELIABILITY.md."""
    row = tally_or_row.row() if isinstance(tally_or_row, Tally) else dict(tally_or_row)
    row = {"scenario": scenario, **row, **extra}
    print("RESULT", json.dumps(row))
    out = os.environ.get("RELIABILITY_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def wait_until(pred: Any, timeout: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()
