"""Many-model routing experiment: replay the serving policies with the serving predictors on a table.

    python benchmarks/routing_many.py --data ../shared/datasets/llmrouter-dc [--cv 5] [--only NAME,...]

For each predictor spec (below) and protocol (the set's train/test split; K-fold CV on train), the
predictor is fitted on the training rows (`policies.predictors`, the objects `tune train` saves and
serving loads), every evaluated prompt goes through the real `Policy.decide` of `utility` (its
cost_weight swept over `UtilityConfig.sweep_grid`) and of `cheapest-fit` (min_quality swept), and
the chosen targets' table quality and cost make the curve. Per router it prints cost_to_match_best
(cost at the best single target's quality as a share of that target's cost; only real knob settings
count), AIQ over the single targets' cost range, and the best quality reached.

The only seams: embeddings come precomputed from the tuning cache (`policies.tuning.embed`) through
an embedder that looks them up by prompt, and each prompt's prediction is memoised across the knob
sweep (the predictor's answer does not depend on the knob).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from policies.base import StaticView
from policies.config import build_policy, parse_policy
from policies.latency import LatencyEstimator
from policies.predictors import (
    EnsemblePredictor,
    IRTPredictor,
    KNNPredictor,
    LogisticPredictor,
    MFPredictor,
    PriorPredictor,
)
from policies.registry import sweep_of
from policies.tuning.datasets import RouteTable, load_file
from policies.types import RouteRequest, Target

OUT_TOKENS = 256


class LookupEmbedder:
    """Embeddings by prompt text, from the precomputed (cached) matrix."""

    def __init__(self, prompts: list[str], E: np.ndarray) -> None:
        self.row = {p: i for i, p in enumerate(prompts)}
        self.E = E

    def embed_one(self, prompt: str) -> np.ndarray:
        return self.E[self.row[prompt]]

    def embed(self, prompts: list[str]) -> np.ndarray:
        return self.E[[self.row[p] for p in prompts]]


class Memo:
    """The real predictor, asked once per prompt (the knob sweep replays the same prompts)."""

    def __init__(self, pred: Any) -> None:
        self.pred, self.cache = pred, {}
        self.prior = getattr(pred, "prior", None)

    def predict(self, prompt: str, targets: Any) -> dict[str, float]:
        hit = self.cache.get(prompt)
        if hit is None:
            hit = self.cache[prompt] = self.pred.predict(prompt, targets)
        return hit

    def support(self, prompt: str) -> float:
        fn = getattr(self.pred, "support", None)
        return 1.0 if fn is None else fn(prompt)


def specs() -> dict[str, Any]:
    """Predictor factories by name (embedder passed in)."""
    return {
        "prior": lambda emb: PriorPredictor(),
        "knn-k40": lambda emb: KNNPredictor(k=40, embedder=emb),
        "knn-k80": lambda emb: KNNPredictor(k=80, embedder=emb),
        "knn-tuned": lambda emb: KNNPredictor(tune_k=(10, 20, 40, 80, 160, 320), embedder=emb),
        "knn-k80-iso": lambda emb: KNNPredictor(k=80, calibration="isotonic", embedder=emb),
        "logistic": lambda emb: LogisticPredictor(embedder=emb),
        "logistic-iso": lambda emb: LogisticPredictor(calibration="isotonic", embedder=emb),
        "mf": lambda emb: MFPredictor(embedder=emb),
        "irt": lambda emb: IRTPredictor(embedder=emb),
        "ensemble": lambda emb: EnsemblePredictor(embedder=emb),  # knn k=80 + logistic
        "ensemble-shrink": lambda emb: EnsemblePredictor(shrink=True, embedder=emb),
    }


def targets_for(table: RouteTable, meta: dict[str, Any], train: RouteTable) -> list[Target]:
    prior = train.quality.mean(0)
    return [Target(id=t, kind="local", input_price_per_mtok=meta["prices_per_mtok"][t][0],
                   output_price_per_mtok=meta["prices_per_mtok"][t][1], context_window=1 << 20,
                   quality_prior=float(prior[j])) for j, t in enumerate(table.targets)]


def replay(policy_cfg: dict[str, Any], table: RouteTable, targets: list[Target], quality: Any) -> list[dict]:
    """One point per knob value: mean quality and cost of the targets the real policy chose."""
    cfg = parse_policy(policy_cfg)
    knob, grid = sweep_of(cfg)
    view = StaticView(targets, LatencyEstimator(targets), quality)
    col = {t: j for j, t in enumerate(table.targets)}
    cost = table.costs()
    reqs = [RouteRequest(prompt=p, prompt_tokens=int(table.tokens_in[i]) if table.tokens_in is not None
                         else max(1, len(p) // 4), expected_output_tokens=OUT_TOKENS)
            for i, p in enumerate(table.prompts)]
    rows = np.arange(len(table))
    points = []
    for v in grid if knob else [None]:
        pol = build_policy(cfg.model_copy(update={knob: v}) if knob else cfg)
        chosen = np.array([col.get(pol.decide(r, view).target, -1) for r in reqs])
        served = chosen >= 0
        q = np.where(served, table.quality[rows, np.maximum(chosen, 0)], 0.0)
        c = np.where(served, cost[rows, np.maximum(chosen, 0)], 0.0)
        points.append({"knob": v, "quality": float(q.mean()), "cost": float(c.mean()),
                       "served": float(served.mean())})
    return points


def summary(points: list[dict], table: RouteTable) -> dict[str, Any]:
    qs, cs = table.quality.mean(0), table.costs().mean(0)
    b = int(np.argmax(qs - 1e-12 * cs))  # best single target (ties: cheaper)
    q = np.array([p["quality"] for p in points])
    c = np.array([p["cost"] for p in points])
    reach = c[q >= qs[b] - 1e-12]
    return {"cost_to_match_best": float(reach.min() / cs[b]) if reach.size else None,
            "aiq": aiq(c, q, float(cs.min()), float(cs.max())), "best_quality": float(q.max()),
            "best_target": table.targets[b], "best_target_quality": float(qs[b])}


def aiq(cost: np.ndarray, quality: np.ndarray, lo: float, hi: float, n: int = 400) -> float:
    """Mean over [lo, hi] of the non-decreasing upper hull of the (cost, quality) points."""
    pts = sorted(zip(cost.tolist(), quality.tolist(), strict=True))
    hull: list[tuple[float, float]] = []
    for x, y in pts:
        if hull and y <= hull[-1][1]:
            continue
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    hx, hy = np.array(hull).T
    grid = np.linspace(lo, hi, n)
    return float(np.interp(grid, hx, hy, left=0.0 if hx[0] > lo else hy[0], right=hy[-1]).mean())


def run(train: RouteTable, test: RouteTable, Etr: np.ndarray, Ete: np.ndarray, meta: dict, name: str,
        policies: list[dict]) -> dict[str, Any]:
    emb = LookupEmbedder(train.prompts + test.prompts, np.concatenate([Etr, Ete]))
    pred = specs()[name](emb)
    labels = {t: train.quality[:, j] for j, t in enumerate(train.targets)}
    pred.fit(Etr, labels)
    targets = targets_for(test, meta, train)
    quality = Memo(pred)
    return {p["name"]: replay(p, test, targets, quality) for p in policies}


def main(argv: list[str] | None = None) -> int:
    from policies.tuning.embed import embed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with train.csv, test.csv, meta.json")
    ap.add_argument("--cv", type=int, default=5, help="folds of CV on train (0 = skip)")
    ap.add_argument("--only", default=None, help="comma-separated predictor specs")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--json", default=None, help="write all points and summaries here")
    args = ap.parse_args(argv)
    root = Path(args.data)
    meta = json.loads((root / "meta.json").read_text())
    train, test = load_file(root / "train.csv"), load_file(root / "test.csv")
    Etr, Ete = embed(train.prompts, args.encoder), embed(test.prompts, args.encoder)
    names = args.only.split(",") if args.only else list(specs())
    policies = [{"name": "utility"}, {"name": "cheapest-fit", "on_unsatisfiable": "best_effort"}]
    out: dict[str, Any] = {}
    for name in names:
        t0 = time.time()
        res: dict[str, Any] = {"test": {}, "cv": {}}
        for pol, pts in run(train, test, Etr, Ete, meta, name, policies).items():
            res["test"][pol] = {"points": pts, **summary(pts, test)}
        if args.cv:
            folds = np.array_split(np.random.default_rng(0).permutation(len(train)), args.cv)
            merged: dict[str, list[dict]] = {}
            for f in folds:
                tr = np.setdiff1d(np.arange(len(train)), f)
                part = run(train.subset(tr), train.subset(f), Etr[tr], Etr[f], meta, name, policies)
                for pol, pts in part.items():
                    acc = merged.setdefault(pol, [dict(p, quality=0.0, cost=0.0) for p in pts])
                    for a, p in zip(acc, pts, strict=True):
                        a["quality"] += p["quality"] * len(f) / len(train)
                        a["cost"] += p["cost"] * len(f) / len(train)
            for pol, pts in merged.items():
                res["cv"][pol] = {"points": pts, **summary(pts, train)}
        out[name] = res
        for proto in ("test", "cv"):
            for pol, r in res[proto].items():
                ctm = r["cost_to_match_best"]
                print(f"{name:16s} {proto:4s} {pol:12s} cost_to_match_best="
                      f"{'never' if ctm is None else f'{ctm:.3f}'} aiq={r['aiq']:.4f} "
                      f"best_q={r['best_quality']:.3f}", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
