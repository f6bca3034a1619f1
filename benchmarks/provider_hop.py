"""API fallback: the provider called through a Serve deployment (one handle hop) vs from the ingress itself.

    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/provider_hop.py            # c = 1, 8, 32; 3 rounds
    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/provider_hop.py --seconds 3 --rounds 2

Paths, one Ray session, both behind the same Serve HTTP proxy, same fake OpenAI server
(tests/support/fake_openai.py in a subprocess on 127.0.0.1, fixed TTFT, non-streaming answers):
  in_ingress  RouterIngress (app `direct`) holding the ProviderClient: proxy -> ingress -> HTTP
  handle_hop  RouterIngress (app `hop`) with the provider behind a deployment (`ProviderHop` below: the
              former deployments/provider.py ProviderReplica, same max_ongoing_requests=128, num_cpus
              0.05): proxy -> ingress -> provider replica -> HTTP
  provider    the fake server itself (the floor both paths add to)
Closed loop (benchmarks/overheadlib/load.py): N workers, each waits for its answer before the next.
Cells are interleaved: for each concurrency, `--rounds` rounds, each round runs every path once, the path
order reversed every other round, so machine noise hits both paths alike. Per path and concurrency the
JSON has every round and the median of the rounds' p50/p99/rps. `cpu_ms_per_req` is the CPU of every
process of the session (proxy, replicas, controller, the fake server) per answered request, not
idle-subtracted; `replica_cores` is the CPU of the path's own replicas (the router ingress; with the hop
also the provider replica) as cores busy during the cell (1.0 = one core saturated), `replica_cpu_ms_per_req`
the same per request. `--profile` adds a py-spy profile of each path's ingress replica at the highest c.

Writes benchmarks/results/provider_hop.json (`--out`), with `uptime` before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.overheadlib.load import CpuMeter, load, wait_http  # noqa: E402
from benchmarks.overheadlib.procs import (  # noqa: E402
    profile_router,
    ray_start,
    replica_pid,
    start_fake_openai,
    stop,
)

RESULTS = Path(__file__).resolve().parent / "results"
KEY_ENV = "PROVIDER_HOP_BENCH_KEY"
PATHS = ("in_ingress", "handle_hop", "provider")


class ProviderHop:
    """The provider deployment the router had before (a ProviderClient in its own replica)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from deployments.provider import ProviderClient, ProviderConfig

        self._client = ProviderClient.from_env(ProviderConfig.model_validate(config))

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._client.complete(endpoint, body)

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.aclosing(self._client.stream(endpoint, body)) as chunks:
            async for chunk in chunks:
                yield chunk


def router_config(base_url: str) -> dict[str, Any]:
    from router.config import AppConfig

    cfg = AppConfig.model_validate({
        "providers": [{"id": "api", "base_url": base_url, "model": "fake-model", "api_key_env": KEY_ENV,
                       "latency": {"ttft_ms": 20, "tpot_ms": 1, "max_concurrency": 256}}],
        "quality": {"kind": "prior"},
        "ingress": {"max_ongoing_requests": 1024},
    })
    return cfg.model_dump(mode="json")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ttft", type=float, default=0.02, help="fake provider: seconds before the answer")
    ap.add_argument("--port", type=int, default=8471)
    ap.add_argument("--out", default="provider_hop.json")
    ap.add_argument("--profile", action="store_true", help="py-spy each ingress replica at the highest c")
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]

    doc: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "uptime_before": uptime()}
    print(doc["uptime_before"], flush=True)
    os.environ[KEY_ENV] = "sk-bench"  # replicas inherit it (as with `serve run`)
    fake, fake_url = start_fake_openai(args.ttft, 0.0)
    try:
        ray_start()
        from ray import serve

        from router.ingress import RouterIngress

        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        cfg = router_config(fake_url)
        hop = serve.deployment(name="provider-api", max_ongoing_requests=128,
                               ray_actor_options={"num_cpus": 0.05})(ProviderHop).bind(cfg["providers"][0])
        router = RouterIngress.options(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
        serve.run_many([
            serve.RunTarget(router.bind(cfg, {}), name="direct", route_prefix="/direct"),
            serve.RunTarget(router.bind(cfg, {"api": hop}), name="hop", route_prefix="/hop"),
        ], wait_for_applications_running=False)
        body = {"model": "api", "messages": [{"role": "user", "content": "say something"}], "max_tokens": 16}
        base = f"http://127.0.0.1:{args.port}"
        urls = {"in_ingress": (f"{base}/direct/v1/chat/completions", body, {}),
                "handle_hop": (f"{base}/hop/v1/chat/completions", body, {}),
                "provider": (f"{fake_url}/chat/completions", {**body, "model": "fake-model"},
                             {"authorization": "Bearer sk-bench"})}
        for url, b, h in urls.values():
            wait_http(url, b, 240, h)
        cpu = CpuMeter((fake.pid,))
        replicas = {"in_ingress": [replica_pid("direct", "router")],
                    "handle_hop": [replica_pid("hop", "router"), replica_pid("hop", "provider-api")],
                    "provider": []}
        doc["replica_pids"] = replicas
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {p: {str(c): [] for c in conc} for p in PATHS}
        for c in conc:
            for r in range(args.rounds):
                for label in PATHS if r % 2 == 0 else tuple(reversed(PATHS)):
                    url, b, h = urls[label]
                    a, t0 = cpu.snapshot(), time.perf_counter()
                    res = asyncio.run(load(url, b, c, args.seconds, args.warmup, h))
                    wall = time.perf_counter() - t0
                    b = cpu.snapshot()
                    res["cpu_ms_per_req"] = round(1000 * CpuMeter.delta(a, b) / max(1.0, res["rps"] * wall), 3)
                    own = sum(b.get(pid, 0.0) - a.get(pid, 0.0) for pid in replicas[label] if pid)
                    res["replica_cores"] = round(own / wall, 3)
                    res["replica_cpu_ms_per_req"] = round(1000 * own / max(1.0, res["rps"] * wall), 3)
                    rounds[label][str(c)].append(res)
                    print(f"c={c:<3} round {r} {label:<11} p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:7.2f} "
                          f"ms  {res['rps']:7.1f} rps  cpu {res['cpu_ms_per_req']:.2f} ms/req  "
                          f"replicas {res['replica_cores']:.2f} cores  err {res['errors']}", flush=True)
        if args.profile:
            doc["profile"] = {}
            for label, app in (("in_ingress", "direct"), ("handle_hop", "hop")):
                pid = replica_pid(app, "router")
                if pid is None:
                    continue
                box: dict[str, Any] = {}
                out = Path(tempfile.gettempdir()) / f"provider_hop_{label}.pyspy.txt"  # raw; summary in the JSON
                th = threading.Thread(target=lambda p=pid, o=out, d=box: d.update(profile_router(p, 8, o)))
                th.start()
                url, b, h = urls[label]
                asyncio.run(load(url, b, max(conc), 10, 0.5, h))
                th.join()
                doc["profile"][label] = box
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        stop([fake])
    doc["uptime_after"] = uptime()
    print(doc["uptime_after"], flush=True)
    doc["setup"] = {"fake_provider": {"ttft_s": args.ttft, "token_delay_s": 0.0, "max_tokens": 16},
                    "seconds": args.seconds, "warmup_s": args.warmup, "rounds": args.rounds,
                    "layout": {"in_ingress": "proxy -> RouterIngress (ProviderClient in the replica) -> HTTP",
                               "handle_hop": "proxy -> RouterIngress -> provider deployment replica -> HTTP",
                               "provider": "the fake OpenAI server directly"}}
    results: dict[str, dict[str, Any]] = {}
    for label, by_c in rounds.items():
        results[label] = {}
        for c, cells in by_c.items():
            summary: dict[str, Any] = {}
            for key in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_req", "replica_cores", "replica_cpu_ms_per_req"):
                vals = [cell[key] for cell in cells]
                summary[key] = round(statistics.median(vals), 2)
                summary[f"{key}_range"] = [min(vals), max(vals)]
            summary["errors"] = sum(cell["errors"] for cell in cells)
            summary["rounds"] = cells
            results[label][c] = summary
    doc["results"] = results
    doc["hop_minus_in_ingress"] = {
        c: {"p50_ms": round(results["handle_hop"][c]["p50_ms"] - results["in_ingress"][c]["p50_ms"], 2),
            "p99_ms": round(results["handle_hop"][c]["p99_ms"] - results["in_ingress"][c]["p99_ms"], 2),
            "rps_ratio_in_ingress_over_hop": round(results["in_ingress"][c]["rps"]
                                                   / max(0.1, results["handle_hop"][c]["rps"]), 2)}
        for c in results["in_ingress"]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["hop_minus_in_ingress"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
