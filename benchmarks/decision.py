"""In-process decision time per policy: p50/p99 µs and decisions/s at 2, 10 and 100 targets.

    python benchmarks/decision.py                 # full run (table, static featurizer, MiniLM)
    python benchmarks/decision.py --quick         # a couple of seconds, table-driven only
    python benchmarks/decision.py --quick --embed # quick, plus a few learned decisions of each kind

Every decision sees live latency state: before each one, one target gets a new observation, so the
lazy quantile refresh is on the measured path as it is in serving at ~1 completion per request.
Decisions are made as the router makes them when the decision is not traced (the default: no span
exporter), i.e. `RouteRequest.explain=False`, without the per-candidate Estimates; the `traced` cells
(10 targets, table-driven) are the same decisions with them, as a recording span gets them. The
learned runs use distinct prompts (no cache hits), so featurizing one prompt is included:
  * `static`: KNNPredictor (k=40) over 5,000 training prompts on the static featurizer
    (`routerctl tune featurizer build`), prompts of 8-400 words; the whole decision inline
    (featurize + kNN + policy). Serving featurizes in a worker thread (router/learned.py); the part
    left on the event loop is the `static-loop` cell (prediction looked up + policy).
    `static-logistic`: the same inline, with a LogisticPredictor instead of the kNN.
  * `embed`: LogisticPredictor on the packaged all-MiniLM-L6-v2, one torch thread.

Writes benchmarks/results/decision.json: {"policies": {name: {p50_us, p99_us, decisions_per_s, targets,
predictor}}, "runs": [every (policy, targets, predictor) cell], "machine": .., "date": .., "command": ..}.
`policies[name]` is the 10-target table-driven cell (untraced), `policies[name + "+traced"]` the same
traced; `policies[name + "+static"]`,
`policies[name + "+static-loop"]`, `policies[name + "+static-logistic"]` and `policies[name + "+embed"]` the
learned ones.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.meta import write_result  # noqa: E402
from policies.base import StaticView  # noqa: E402
from policies.config import build_policy, parse_policy  # noqa: E402
from policies.latency import LatencyEstimator  # noqa: E402
from policies.predictors import PriorPredictor  # noqa: E402
from policies.types import Constraints, LatencyPrior, RouteRequest, Target  # noqa: E402

POLICIES = [
    {"name": "cheapest-fit"},
    {"name": "cascade"},
    {"name": "always", "target": "t0"},
    {"name": "always-cheapest"},
    {"name": "always-strongest"},
    {"name": "random", "seed": 1},
    {"name": "round-robin"},
    {"name": "quality-threshold", "strong": "t1", "weak": "t0", "threshold": 0.5},
]
WORDS = "route model latency cost quality token answer prove write explain compute summarise".split()


def make_targets(n: int) -> list[Target]:
    rng = random.Random(n)
    out = []
    for i in range(n):
        api = i >= n - max(1, n // 5)
        out.append(
            Target(
                id=f"t{i}",
                kind="api" if api else "local",
                input_price_per_mtok=round(rng.uniform(0.01, 5), 3),
                output_price_per_mtok=round(rng.uniform(0.02, 15), 3),
                quality_prior=round(rng.uniform(0.2, 0.95), 3),
                context_window=rng.choice([4096, 8192, 32768]),
                latency=LatencyPrior(ttft_ms=rng.uniform(50, 400), tpot_ms=rng.uniform(5, 40)),
                replicas=rng.randint(1, 4),
            )
        )
    return out


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for i in range(n)]


def make_embed_quality(targets: list[Target]):
    import numpy as np

    from policies.predictors import LogisticPredictor
    from policies.predictors.embed import DIM, Embedder

    rng = np.random.default_rng(0)
    E = rng.normal(size=(200, DIM)).astype(np.float32)
    labels = {t.id: (rng.random(200) < t.quality_prior).astype(float) for t in targets}
    pred = LogisticPredictor(steps=20).fit(E, labels)
    pred._embedder = Embedder(threads=1)  # one thread: serving shares 2 cores with everything else
    pred.embedder.embed_one("warm-up")  # model load is a start-up cost, not a decision cost
    return pred


def long_prompts(n: int, seed: int) -> list[str]:
    """Distinct prompts of 8-400 words (a mix like real chat turns), for the featurizer cells."""
    rng = random.Random(seed)
    vocab = WORDS + "the of and a to in is you that it he was for on are as with his they".split()
    return [f"{seed}-{i}: " + " ".join(rng.choice(vocab) for _ in range(int(8 * 50 ** rng.random())))
            for i in range(n)]


def make_static_quality(targets: list[Target], offloaded: bool = False, kind: str = "knn"):
    import numpy as np

    from policies.predictors import KNNPredictor, LogisticPredictor
    from policies.predictors.offload import OffloadedQuality
    from policies.predictors.static_embed import StaticEmbedder

    embedder = StaticEmbedder()  # the default build; FeaturizerMissing says how to make it
    E = embedder.embed(long_prompts(5000, seed=7))
    rng = np.random.default_rng(0)
    labels = {t.id: (rng.random(len(E)) < t.quality_prior).astype(float) for t in targets}
    pred = (KNNPredictor(k=40) if kind == "knn" else LogisticPredictor(steps=20)).fit(E, labels)
    pred._embedder = embedder
    pred.embedder.embed_one("warm-up")
    if not offloaded:
        return pred
    return OffloadedQuality(pred, targets)


def run_cell(policy_cfg: dict, targets: list[Target], quality, n: int, seed: int,
             texts: list[str] | None = None, explain: bool = False) -> dict:
    est = LatencyEstimator(targets)
    rng = random.Random(seed)
    for t in targets:  # warm, live state: sketches past min_samples, some load
        for _ in range(20):
            est.observe(t.id, rng.uniform(50, 300), rng.uniform(5, 40), rng.randint(10, 300))
        for _ in range(rng.randint(0, 6)):
            est.started(t.id)
    view = StaticView(targets, est, quality)
    policy = build_policy(parse_policy(policy_cfg))
    cons = [
        Constraints(),
        Constraints(min_quality=0.6, max_latency_ms=5000),
        Constraints(min_quality=0.8, max_cost_usd=0.002, allow_fallback=False),
        Constraints(max_latency_ms=800, latency_metric="ttft"),
    ]
    reqs = [
        RouteRequest(
            prompt=p,
            prompt_tokens=rng.randint(20, 2000),
            expected_output_tokens=rng.randint(16, 512),
            constraints=cons[i % len(cons)],
            explain=explain,  # False: as the router decides when the decision is not traced (the default)
        )
        for i, p in enumerate(texts if texts is not None else prompts(n, seed))
    ]
    prepare = getattr(quality, "prepare", None)
    if prepare is not None:  # what serving does before the decision, off the loop (not timed)
        import asyncio

        async def _prepare_all() -> None:
            for r in reqs:
                await prepare(r.prompt)

        asyncio.run(_prepare_all())
    ids = [t.id for t in targets]
    times, cpu = [], []
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    for r in reqs:
        est.observe(rng.choice(ids), rng.uniform(50, 300), rng.uniform(5, 40), rng.randint(10, 300))
        t0, c0 = perf(), thread()
        policy.decide(r, view)
        cpu.append(thread() - c0)
        times.append(perf() - t0)
    times.sort()
    cpu.sort()
    total_s = sum(times) / 1e9
    q99 = min(len(times) - 1, int(len(times) * 0.99))
    return {
        "policy": policy_cfg["name"],
        "targets": len(targets),
        "p50_us": round(times[len(times) // 2] / 1e3, 2),
        "p99_us": round(times[q99] / 1e3, 2),
        # CPU time of the deciding thread: the work itself, without the waits for a core that a loaded
        # shared machine adds to the wall-clock figures above.
        "cpu_p50_us": round(cpu[len(cpu) // 2] / 1e3, 2),
        "cpu_p99_us": round(cpu[q99] / 1e3, 2),
        "decisions_per_s": round(len(times) / total_s),
        "n": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few decisions, no 100-target or embedding runs")
    ap.add_argument("--embed", action="store_true", help="with --quick: include a few learned decisions")
    ap.add_argument("--no-minilm", action="store_true", help="skip the MiniLM cells (slow: ~45 ms each)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decision.json"))
    args = ap.parse_args(argv)
    from policies.predictors.offload import single_thread_blas

    single_thread_blas()  # as in the ingress replica (router/learned.py)
    load_before = os.getloadavg()

    sizes = (2, 10) if args.quick else (2, 10, 100)
    n_table = 300 if args.quick else 5000
    do_embed = args.embed or not args.quick
    n_embed = 20 if args.quick else 50
    n_static = 100 if args.quick else 1000
    runs = []
    for size in sizes:
        targets = make_targets(size)
        for cfg in POLICIES:
            cell = run_cell(cfg, targets, PriorPredictor(), n_table, seed=size)
            cell["predictor"] = "prior"
            runs.append(cell)
            if size == 10:  # the same decisions traced: every candidate's Estimate built for the span
                cell = run_cell(cfg, targets, PriorPredictor(), n_table, seed=size, explain=True)
                cell["predictor"] = "traced"
                runs.append(cell)
    if do_embed:
        for size in sizes:
            targets = make_targets(size)
            for kind in ("static", "static-loop", "static-logistic"):
                quality = make_static_quality(targets, offloaded=kind == "static-loop",
                                              kind="logistic" if kind == "static-logistic" else "knn")
                for cfg in POLICIES:
                    seed = 1000 * size + len(runs)  # distinct prompts per cell: no cache hits
                    cell = run_cell(cfg, targets, quality, n_static, seed, long_prompts(n_static, seed))
                    cell["predictor"] = kind
                    runs.append(cell)
    if do_embed and not args.no_minilm:
        for size in sizes:
            targets = make_targets(size)
            quality = make_embed_quality(targets)
            for cfg in POLICIES:
                # a distinct seed per cell gives distinct prompts: every decision embeds afresh
                cell = run_cell(cfg, targets, quality, n_embed, seed=1000 * size + len(runs))
                cell["predictor"] = "embed"
                runs.append(cell)

    summary = {}
    for cell in runs:
        if cell["targets"] == 10:
            key = cell["policy"] + ("" if cell["predictor"] == "prior" else "+" + cell["predictor"])
            summary[key] = {k: cell[k] for k in ("p50_us", "p99_us", "cpu_p50_us", "cpu_p99_us",
                                                 "decisions_per_s", "targets")}
            summary[key]["predictor"] = cell["predictor"]
    result = {"policies": summary, "runs": runs, "goals": {"table_p99_us": 100, "learned_p99_us": 1000},
              "quick": args.quick}
    out = write_result(result, args.out, "benchmarks/decision.py", argv, load_before)
    print(f"{'policy':<20}{'targets':>8}{'predictor':>12}{'p50 µs':>10}{'p99 µs':>10}{'cpu p50':>10}"
          f"{'cpu p99':>10}{'dec/s':>10}")
    for c in runs:
        print(f"{c['policy']:<20}{c['targets']:>8}{c['predictor']:>12}{c['p50_us']:>10}{c['p99_us']:>10}"
              f"{c['cpu_p50_us']:>10}{c['cpu_p99_us']:>10}{c['decisions_per_s']:>10}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
