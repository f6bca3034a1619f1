"""SLO attainment under load (P3) on REAL engines: both vLLM CPU models of cluster.yaml + a fake provider.

    .venv/bin/python benchmarks/slo_live.py            # 5 policies x rates 0.5,1,2,4 req/s, 30 s cells
    .venv/bin/python benchmarks/slo_live.py --quick    # 2 policies x 1 rate, 10 s cells (slo_live_quick.json)

What runs (all on this machine, one fresh local Ray of its own):
- `router.app:build` on the args of cluster.yaml's router app: the two local models (smollm2-135m,
  gemma3-270m; real vLLM CPU engines, prepared in ~/.cache/llm-router), and its provider entry pointed at
  the fake OpenAI server of tests/support/fake_openai.py (a subprocess on 127.0.0.1 with a fixed TTFT and
  per-token delay, near the provider's configured latency prior). The provider key is a random string set
  in os.environ under the config's `api_key_env` before ray.init, so the replicas inherit it.
- Serve HTTP on 127.0.0.1 (first free port in 8180-8189).
- Per policy, only the ingress is redeployed: `serve.run` of the rebuilt app with the model deployments'
  version pinned. Serve gives every deployment without a version a random one on each `serve.run`
  (ray/serve/_private/client.py), and a new code version restarts the replicas: without the pin every
  policy switch would restart both engines (~1.5-2.5 min each here). The script checks the model replica
  actors are the same before and after each switch (`engine_restarts` in the JSON).
- Open-loop Poisson load (seeded; the same arrival sequence for every policy at a rate), the mix of
  issue 7 (benchmarks/slo_live_stats.MIX): 50% `routing.max_latency_ms=1500` (e2e), 30%
  `routing.min_quality=0.8`, 20% unconstrained; short prompts, `max_tokens` 16.
SLO met (benchmarks/slo_live_stats.slo_met): 2xx and client e2e <= 1.5 s / answered by a target whose
quality prior >= 0.8 / answered. Requests still open at --timeout count as failed.

Writes benchmarks/results/slo_live.json (`policies[name]` = the headline rate; `by_rate[name][rate]` =
every cell, with per-class attainment) and slo_live.png (attainment vs rate); prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from benchmarks.slo_live_stats import MIX, PROMPTS, markdown, plot, schedule, summarize  # noqa: E402

POLICIES: dict[str, dict[str, Any]] = {
    "cheapest-fit": {"name": "cheapest-fit"},
    # RouteLLM-style: strong = the provider, weak = the cheapest local; threshold as in benchmarks/slo.py.
    "quality-threshold": {"name": "quality-threshold", "strong": "openai", "weak": "smollm2-135m",
                          "threshold": 0.6},
    "always-cheapest": {"name": "always-cheapest"},
    "always-strongest": {"name": "always-strongest"},
    "round-robin": {"name": "round-robin"},
}
PIN_VERSION = "slo-live-engines-v1"


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def code_rev() -> dict[str, Any]:
    """The code measured: git HEAD and uncommitted changes under the packages (the checkout is shared)."""
    import subprocess

    def git(*a: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:  # a `git archive` snapshot: the caller says which commit it is
        return {"head": os.environ.get("SLO_LIVE_CODE_REV"), "snapshot": str(ROOT)}
    dirty = git("status", "--porcelain", "--", "policies", "router", "deployments")
    return {"head": head, "dirty": (dirty or "").splitlines()}


def free_port(lo: int = 8180, hi: int = 8189) -> int:
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {lo}-{hi}")


def app_args(provider_url: str) -> dict[str, Any]:
    """cluster.yaml's router args with the provider pointed at the fake (its key env var unchanged)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    args: dict[str, Any] = next(a for a in cfg["applications"] if a.get("import_path") == "router.app:build")["args"]
    args["providers"] = [{**args["providers"][0], "base_url": provider_url, "model": "fake-gpt"}]
    # this benchmark binds the engines inside the router's app (and pins their versions), not as
    # cluster.yaml's per-model applications
    args["models"] = [{k: v for k, v in m.items() if k != "app"} for m in args["models"]]
    return args


def pin_model_versions(app: Any, version: str) -> int:
    """Give every deployment bound under the ingress a fixed version so a redeploy keeps its replicas."""
    from ray.serve.deployment import Application

    pinned = 0

    def walk(value: Any) -> None:
        nonlocal pinned
        if isinstance(value, Application):
            value._bound_deployment = value._bound_deployment.options(version=version, _internal=True)
            pinned += 1
            walk((value._bound_deployment.init_args, value._bound_deployment.init_kwargs))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk((app._bound_deployment.init_args, app._bound_deployment.init_kwargs))
    return pinned


def model_replicas() -> list[str]:
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#model-" in a["name"])


def deploy(args: dict[str, Any], policy: dict[str, Any], base: str, timeout: float) -> float:
    """(Re)deploy the router app with this policy; returns seconds until it answers on every target."""
    import httpx
    from ray import serve

    from router.app import build

    t0 = time.perf_counter()
    app = build({**args, "policy": policy})
    pin_model_versions(app, PIN_VERSION)
    serve.run(app, name="router", route_prefix="/", blocking=False)
    targets = [m["id"] for m in args["models"]] + [p["id"] for p in args["providers"]]
    pending = set(targets)
    while pending:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"targets {sorted(pending)} did not answer within {timeout:.0f} s")
        for tid in sorted(pending):
            try:
                r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                    "model": tid, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
                if r.status_code == 200 and r.headers.get("x-router-target") == tid:
                    pending.discard(tid)
            except httpx.HTTPError:
                pass
        if pending:
            time.sleep(1.0)
    return time.perf_counter() - t0


async def _one(client: Any, url: str, body: dict[str, Any], cls_name: str, t_s: float, lag_ms: float,
               timeout: float) -> dict[str, Any]:
    import httpx

    rec: dict[str, Any] = {"cls": cls_name, "t_s": round(t_s, 3), "lag_ms": round(lag_ms, 1), "status": 0,
                           "target": "none", "reason": "", "cost_usd": 0.0}
    t0 = time.perf_counter()
    try:
        r = await client.post(url, json=body, timeout=timeout)
        data = r.json()
        rec["status"] = r.status_code
        rec["target"] = r.headers.get("x-router-target", "none")
        rec["reason"] = r.headers.get("x-router-reason", "")
        rec["cost_usd"] = float(r.headers.get("x-router-cost-usd") or 0.0)
        if r.status_code == 200:
            rec["completion_tokens"] = int((data.get("usage") or {}).get("completion_tokens") or 0)
        else:
            rec["error"] = ((data.get("error") or {}).get("code") or "")[:60]
    except (httpx.HTTPError, ValueError) as e:
        rec["error"] = type(e).__name__
    rec["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return rec


async def run_cell(base: str, rate: float, seconds: float, seed: int, max_tokens: int,
                   timeout: float) -> list[dict[str, Any]]:
    """Open loop: each request is sent at its scheduled time whatever the earlier ones are doing."""
    import httpx

    plan = schedule(rate, seconds, seed)
    url = f"{base}/v1/chat/completions"
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        tasks = []
        for t_s, cls, prompt in plan:
            delay = start + t_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = (time.perf_counter() - start - t_s) * 1000
            body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": prompt}],
                                    "max_tokens": max_tokens, "temperature": 0}
            if cls.routing:
                body["routing"] = cls.routing
            tasks.append(asyncio.create_task(_one(client, url, body, cls.name, t_s, lag, timeout)))
        return list(await asyncio.gather(*tasks))


def idle_latency(base: str, targets: list[str], max_tokens: int, n: int = 3) -> dict[str, float]:
    """p50 of n sequential pinned requests per target on the idle system (the service time floor)."""
    import httpx

    out: dict[str, float] = {}
    for tid in targets:
        xs = []
        for i in range(n):
            body = {"model": tid, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
            if r.status_code == 200:
                xs.append((time.perf_counter() - t0) * 1000)
        out[tid] = round(sorted(xs)[len(xs) // 2], 1) if xs else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 policies, one rate, 10 s cells")
    ap.add_argument("--rates", default=None, help="comma list of req/s (default 0.5,1,2,4; quick: 2)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of arrivals per cell (30; quick 10)")
    ap.add_argument("--policies", default=None, help=f"comma list of {', '.join(POLICIES)}")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=30.0, help="client timeout per request (s)")
    ap.add_argument("--provider-ttft", type=float, default=0.4, help="fake provider TTFT (s)")
    ap.add_argument("--provider-token-delay", type=float, default=0.015, help="fake provider s/token")
    ap.add_argument("--headline-rate", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--port", type=int, default=None, help="Serve HTTP port (default: first free 8180-8189)")
    ap.add_argument("--out", default=None, help="file name under benchmarks/results")
    args = ap.parse_args(argv)

    rates = [float(r) for r in (args.rates or ("2" if args.quick else "0.5,1,2,4")).split(",")]
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    names = (args.policies or ("cheapest-fit,quality-threshold" if args.quick else ",".join(POLICIES))).split(",")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        ap.error(f"unknown policies {unknown}")
    out_name = args.out or ("slo_live_quick.json" if args.quick else "slo_live.json")
    t_all = time.perf_counter()
    load_start = loadavg()
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    from tests.support.fake_openai import fake_openai_subprocess

    key = "sk-slo-live-" + secrets.token_hex(12)
    with fake_openai_subprocess(api_key=key, ttft_s=args.provider_ttft,
                                token_delay_s=args.provider_token_delay) as provider:
        cfg = app_args(provider.base_url)
        api_key_env = cfg["providers"][0]["api_key_env"]
        os.environ[api_key_env] = key  # before ray.init: the provider replica inherits it
        priors = {m["id"]: float(m.get("quality_prior", 0.5)) for m in cfg["models"]}
        priors.update({p["id"]: float(p.get("quality_prior", 0.9)) for p in cfg["providers"]})
        api_targets = {p["id"] for p in cfg["providers"]}

        import ray
        from ray import serve

        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", _temp_dir=tempfile.mkdtemp(prefix="slo-live-ray-"))
        by_rate: dict[str, dict[str, dict[str, Any]]] = {}
        deploys: list[dict[str, Any]] = []
        idle: dict[str, dict[str, float]] = {}
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            for i, name in enumerate(names):
                before = model_replicas()
                took = deploy(cfg, POLICIES[name], base, timeout=900)
                after = model_replicas()
                deploys.append({"policy": name, "seconds": round(took, 1), "model_replicas": after,
                                "engines_restarted": bool(i) and before != after})
                print(f"[{time.perf_counter() - t_all:6.0f}s] deployed policy {name} in {took:.1f}s "
                      f"(model replicas {'unchanged' if before == after else 'NEW'}: {len(after)})", flush=True)
                # Same warm-up for every policy (each redeploy starts a fresh live latency view); it also
                # shows how loaded the shared machine is just before this policy's cells.
                idle[name] = idle_latency(base, [m["id"] for m in cfg["models"]] + sorted(api_targets),
                                          args.max_tokens)
                print(f"idle latency (ms, {args.max_tokens} tokens, load {loadavg()[:1]}): {idle[name]}",
                      flush=True)
                by_rate[name], raw[name] = {}, {}
                for j, rate in enumerate(rates):
                    t0 = time.perf_counter()
                    recs = asyncio.run(run_cell(base, rate, seconds, args.seed + j, args.max_tokens, args.timeout))
                    s = summarize(recs, MIX, priors, api_targets, seconds)
                    s["cell_wall_s"] = round(time.perf_counter() - t0, 1)
                    by_rate[name][f"{rate:g}"], raw[name][f"{rate:g}"] = s, recs
                    print(f"[{time.perf_counter() - t_all:6.0f}s] {name:<18} {rate:>4g} req/s  n={s['n']:<4} "
                          f"SLO {100 * (s['slo_attainment'] or 0):5.1f}%  p50 {s['p50_ms']} p95 {s['p95_ms']} "
                          f"ms  $/1k {s['cost_per_1k_usd']}  fallback {s['fallback_share']}  {s['targets']}",
                          flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()

    head = min(rates, key=lambda r: abs(r - args.headline_rate))
    table = markdown(by_rate, rates)
    print(table)
    keys = ("slo_attainment", "cost_per_1k_usd", "p50_ms", "p95_ms", "p99_ms", "fallback_share", "error_share")
    doc: dict[str, Any] = {
        "simulated": False,
        "headline_rate_rps": head,
        "policies": {n: {**{k: by_rate[n][f"{head:g}"][k] for k in keys},
                         "per_class": by_rate[n][f"{head:g}"]["per_class"]} for n in by_rate},
        "by_rate": by_rate,
        "rates_rps": rates,
        "seconds_per_cell": seconds,
        "max_tokens": args.max_tokens,
        "mix": [{"class": c.name, "weight": c.weight, "routing": c.routing} for c in MIX],
        "slo_rules": {"e2e_1500": "2xx and client e2e <= 1500 ms",
                      "min_quality": "2xx and answered by a target with quality_prior >= 0.8",
                      "unconstrained": "2xx", "timeout_s": args.timeout,
                      "latency_percentiles": "over answered (2xx) requests, client-measured"},
        "quality_priors": priors,
        "policy_configs": {n: POLICIES[n] for n in names},
        "provider": {"fake": "tests/support/fake_openai.py", "ttft_s": args.provider_ttft,
                     "token_delay_s": args.provider_token_delay},
        "idle_latency_ms": idle,  # per policy, measured right before its cells
        "deploys": deploys,
        "engine_restarts": sum(d["engines_restarted"] for d in deploys),
        "load_avg": {"start": load_start, "end": loadavg()},
        "duration_s": round(time.perf_counter() - t_all, 1),
        "code": code_rev(),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python benchmarks/slo_live.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "requests": raw,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / out_name
    png = out.with_suffix(".png")
    note = plot(by_rate, rates, png, f"real engines, {seconds:g} s cells, load avg {load_start[:1]} -> "
                                     f"{doc['load_avg']['end'][:1]}")
    doc["plot"] = note or str(png.relative_to(ROOT))
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}" + (f" and {png}" if note is None else f" ({note})"))
    print(f"duration {doc['duration_s']:.0f} s, load avg {load_start} -> {doc['load_avg']['end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
