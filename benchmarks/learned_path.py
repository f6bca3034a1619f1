"""A learned quality predictor on the request path, end to end through the real Serve app (fake engines).

    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/learned_path.py          # ~3 min
    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/learned_path.py --quick  # ~1 min, for the tests
    ... learned_path.py --variants "logistic,knn,knn:batched,knn:inline"        # several learned apps

Router applications run side by side on one Serve instance, identical but for `quality`:
  * `prior`: the per-target prior table (table-driven decisions);
  * `learned` (and one app per further `--variants` entry): a predictor on the static featurizer
    (`routerctl tune featurizer build` first), trained on 4,000 prompts: `knn` (k=40) or `logistic`,
    loaded by the ingress at replica start; where it computes a prompt's prediction is the variant's
    `quality.offload` (`auto` by default: see router/learned.py), e.g. `knn:batched`, `logistic:inline`,
    and `si=<ms>` sets `quality.switch_interval_ms` (options joined by `+`).
Each app has its own two FakeLLM models (10 ms to the first token, then one token every 5 ms, 16
tokens). A closed loop of `--concurrency` clients sends streaming chat requests, every prompt distinct
(8-400 words) with `routing.min_quality` between the two models' priors, so the learned policy's
choice depends on each prompt. The apps are measured one after another for `--rounds` rounds, each
round in a rotated order, to spread the shared machine's load drift over all of them.

Per request the client records the time to the last chunk (latency) and the gaps between successive
chunks (a decision running on the ingress's event loop would stall the chunks of every concurrent
stream the replica relays). Results: benchmarks/results/learned_path.json with
`added_p50_ms_c8` (learned p50 - prior p50) and `rps_ratio_c8` (learned / prior), each the median over
rounds of the pair measured in the same round (pooled figures beside them), `chunk_gap_p99_ms_prior`
and `chunk_gap_p99_ms_learned` (over all rounds), the same per variant under `variants`, per-round
cells, the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.meta import write_result  # noqa: E402
from benchmarks.overheadlib.load import pct, wait_http  # noqa: E402

COMMON = "the of and a to in is you that it for on are as with they write explain please".split()
TOPICS = ("poem song rhyme story recipe bread cake garden flower love".split(),  # fake-a answers these well
          "theorem integral proof matrix prime compute derive equation limit vector".split())
MIN_QUALITY = 0.55  # between fake-a's prior (0.5) and fake-b's (0.6): the prior always picks fake-b


def prompt(rng: random.Random, tag: str, topic: int | None = None) -> str:
    """8-400 words, 60% from one topic's words: half the prompts suit the cheap model."""
    words = TOPICS[rng.randrange(2) if topic is None else topic]
    n = int(8 * 50 ** rng.random())
    return f"{tag}: " + " ".join(rng.choice(words if rng.random() < 0.6 else COMMON) for _ in range(n))


def train_artifact(out: Path, split: bool = True, kind: str = "knn") -> Path:
    """A predictor (`kind`: knn k=40 or logistic) on the static featurizer: fake-a is good at the first
    topic's prompts (made-up labels). `split=False`: fake-a is good at nothing, so the learned app
    routes like the prior one (every prompt to fake-b) and the two differ only by the predictor's work."""
    import numpy as np

    from policies.predictors import KNNPredictor, LogisticPredictor
    from policies.predictors.featurizers import record
    from policies.predictors.static_embed import StaticEmbedder

    rng = random.Random(3)
    topics = [i % 2 for i in range(4000)]
    prompts = [prompt(rng, f"train-{i}", t) for i, t in enumerate(topics)]
    emb = StaticEmbedder()
    E = emb.embed(prompts)
    easy = np.array([t == 0 and split for t in topics], dtype=float)
    pred = KNNPredictor(k=40) if kind == "knn" else LogisticPredictor()
    art = pred.fit(E, {"fake-a": easy, "fake-b": np.full(len(prompts), 0.6)}).save(out)
    record(art, "static", emb)
    return art


def router_config(src: str, quality: dict[str, Any]) -> dict[str, Any]:
    from router.config import AppConfig

    def model(mid: str, price: float, q: float) -> dict[str, Any]:
        return {"id": mid, "source": src, "context_window": 8192, "input_price_per_mtok": price,
                "output_price_per_mtok": 2 * price, "quality_prior": q,
                "latency": {"ttft_ms": 10, "tpot_ms": 5, "max_concurrency": 64}, "max_ongoing_requests": 1024}

    cfg = AppConfig.model_validate({
        "models": [model("fake-a", 0.01, 0.5), model("fake-b", 0.02, 0.6)],
        "policy": {"name": "cheapest-fit"}, "quality": quality, "ingress": {"max_ongoing_requests": 1024},
        "limits": {"max_prompt_tokens": 8000},
    })
    return cfg.model_dump(mode="json")


def quality_config(spec: str, artifacts: dict[str, Path]) -> dict[str, Any]:
    """`kind[:option+...]` -> the app's quality config: options `worker` | `batched` | `inline` (where
    the prediction runs) and `si=<ms>` (the ingress process's thread switch interval)."""
    kind, _, opts = spec.partition(":")
    cfg: dict[str, Any] = {"kind": kind, "artifact": str(artifacts[kind])}
    for opt in filter(None, opts.split("+")):
        if opt.startswith("si="):
            cfg["switch_interval_ms"] = float(opt[3:])
        else:
            cfg["offload"] = opt
    return cfg


def deploy(tmp: Path, apps: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, str]:
    from ray import serve

    from benchmarks.fake_engine import FakeLLM
    from benchmarks.overheadlib.fake import model_dir
    from router.ingress import RouterIngress

    src = model_dir(tmp)
    fake = {"ttft_s": args.ttft, "token_delay_s": args.token_delay, "tokens": args.tokens}
    runs = []
    for i, (name, quality) in enumerate(apps.items()):
        models = {m: FakeLLM.options(name=f"model-{m}").bind(m, **fake) for m in ("fake-a", "fake-b")}
        router = RouterIngress.options(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
        runs.append(serve.RunTarget(router.bind(router_config(src, quality), models), name=name,
                                    route_prefix=f"/app{i}"))
    serve.run_many(runs, wait_for_applications_running=False)
    base = f"http://127.0.0.1:{args.port}"
    urls = {name: f"{base}/app{i}/v1/chat/completions" for i, name in enumerate(apps)}
    for url in urls.values():
        wait_http(url, {"model": "auto", "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 2},
                  300)
    return urls


async def load(url: str, conc: int, seconds: float, warmup: float, seed: int) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    gaps: list[float] = []
    targets: dict[str, int] = {}
    errors = 0
    measuring = False
    stop_at = 0.0

    async def worker(w: int, session: Any) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + w)
        i = 0
        while not (stop_at and time.perf_counter() >= stop_at):
            i += 1
            body = {"model": "auto", "stream": True, "max_tokens": 16,
                    "messages": [{"role": "user", "content": prompt(rng, f"{seed}-{w}-{i}")}],
                    "routing": {"min_quality": MIN_QUALITY}}
            t0 = time.perf_counter()
            arrivals: list[float] = []
            try:
                async with session.post(url, json=body) as r:
                    ok = r.status == 200
                    tgt = r.headers.get("x-router-target")
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            arrivals.append(time.perf_counter())
            except Exception:
                ok, tgt = False, None
            if not measuring:
                continue
            if ok and arrivals:
                lat.append((arrivals[-1] - t0) * 1000)
                gaps.extend((b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False))
                targets[tgt or "?"] = targets.get(tgt or "?", 0) + 1
            else:
                errors += 1

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        tasks = [asyncio.create_task(worker(w, session)) for w in range(conc)]
        await asyncio.sleep(warmup)
        measuring = True
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t_start
    return {"p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "rps": round(len(lat) / elapsed, 1), "n": len(lat), "errors": errors,
            "chunk_gap_p50_ms": round(pct(gaps, 0.5), 2), "chunk_gap_p99_ms": round(pct(gaps, 0.99), 2),
            "chunk_gap_max_ms": round(max(gaps), 2) if gaps else None, "targets": targets,
            "_lat": lat, "_gaps": gaps}


def pooled(cells: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x for c in cells for x in c["_lat"]]
    gaps = [x for c in cells for x in c["_gaps"]]
    return {"p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "rps": round(sum(c["rps"] for c in cells) / len(cells), 1), "n": len(lat),
            "errors": sum(c["errors"] for c in cells),
            "chunk_gap_p50_ms": round(pct(gaps, 0.5), 2), "chunk_gap_p99_ms": round(pct(gaps, 0.99), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s per app")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per app per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ttft", type=float, default=0.010)
    ap.add_argument("--token-delay", type=float, default=0.005)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--port", type=int, default=8271)
    ap.add_argument("--routing", choices=["split", "same"], default="split",
                    help="split: the learned app sends each prompt to the model its kNN prefers (half to "
                         "each); same: its labels send every prompt to fake-b, as the prior app does, so "
                         "only the predictor's work differs")
    ap.add_argument("--variants", default="knn",
                    help="comma-separated learned apps, each measured against the prior: kind[:opt+...] with "
                         "kind knn (k=40 over the 4,000 training prompts) or logistic, opts worker | batched | "
                         "inline (quality.offload) and si=<ms> (quality.switch_interval_ms); the first is the "
                         "`learned` app of the contract keys")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learned_path.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 3.0, 1

    from ray import serve

    from benchmarks.overheadlib.procs import ray_start

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="learned-path-"))
    specs = [v.strip() for v in args.variants.split(",") if v.strip()]
    kinds = sorted({v.partition(":")[0] for v in specs})
    artifacts = {k: train_artifact(tmp / k, split=args.routing == "split", kind=k) for k in kinds}
    # the first variant is `learned`, the contract keys' app; further ones are named by their spec
    apps = {"prior": {"kind": "prior"}, **{("learned" if i == 0 else v): quality_config(v, artifacts)
                                           for i, v in enumerate(specs)}}
    ray_start()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        urls = deploy(tmp, apps, args)
        cells: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
        names = list(apps)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # each app in each position in turn
            for name in order:
                cell = asyncio.run(load(urls[name], args.concurrency, args.seconds, 1.0,
                                        seed=10 * r + names.index(name)))
                cells[name].append(cell)
                print(f"round {r} {name:8} p50 {cell['p50_ms']} ms  rps {cell['rps']}  gap p99 "
                      f"{cell['chunk_gap_p99_ms']} ms  errors {cell['errors']}  targets {cell['targets']}",
                      flush=True)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
    summary = {name: pooled(cs) for name, cs in cells.items()}
    # Paired by round (each app against the prior of the same round): the median over rounds of the
    # difference is robust to a load spike in one round, which the pooled figures are not.
    variants = {}
    for name in names[1:]:
        pairs = list(zip(cells[name], cells["prior"], strict=True))
        variants[name] = {
            "spec": specs[0] if name == "learned" else name, "quality": apps[name],
            "added_p50_ms": round(statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in pairs), 2),
            "rps_ratio": round(statistics.median(a["rps"] / b["rps"] for a, b in pairs), 3),
            "chunk_gap_p99_ms": summary[name]["chunk_gap_p99_ms"],
            "added_p50_ms_by_round": [round(a["p50_ms"] - b["p50_ms"], 2) for a, b in pairs],
            "rps_ratio_by_round": [round(a["rps"] / b["rps"], 3) for a, b in pairs],
            "pooled_added_p50_ms": round(summary[name]["p50_ms"] - summary["prior"]["p50_ms"], 2),
            "pooled_rps_ratio": round(summary[name]["rps"] / summary["prior"]["rps"], 3)}
    added, ratio = variants["learned"]["added_p50_ms"], variants["learned"]["rps_ratio"]
    c = args.concurrency
    result = {
        f"added_p50_ms_c{c}": round(added, 2),
        f"rps_ratio_c{c}": round(ratio, 3),
        "chunk_gap_p99_ms_prior": summary["prior"]["chunk_gap_p99_ms"],
        "chunk_gap_p99_ms_learned": summary["learned"]["chunk_gap_p99_ms"],
        "variants": variants,
        "summary": summary,
        "rounds": {n: [{k: v for k, v in cell.items() if not k.startswith("_")} for cell in cs]
                   for n, cs in cells.items()},
        "goals": {"added_p50_ms": 1.0, "rps_ratio_min": 0.95, "chunk_gap_p99": "learned <= prior"},
        "setup": {"concurrency": c, "seconds": args.seconds, "rounds": args.rounds, "stream": True,
                  "fake_engine": {"ttft_s": args.ttft, "token_delay_s": args.token_delay, "tokens": args.tokens},
                  "learned": f"{specs[0]} on the static featurizer (knn: k=40), 4,000 training prompts",
                  "variants": specs,
                  "min_quality": MIN_QUALITY, "prompts": "distinct, 8-400 words", "routing": args.routing},
        "quick": args.quick,
    }
    out = write_result(result, args.out, "benchmarks/learned_path.py", argv, load_before)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rounds", "summary")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
