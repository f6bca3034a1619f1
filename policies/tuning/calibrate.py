"""`tune calibrate`: choose the quality-threshold policy's threshold (or cheapest-fit's min_quality) for
a target strong-call share, a cost budget, or a PGR goal, and print the cluster.yaml snippet.

The scores are the policy engine's own predictor's out-of-fold predictions (K-fold over the table), so
the threshold is calibrated on prompts the predictor has not seen, as in serving. The serving rules
(policies/baselines.py, policies/cheapest_fit.py), for one strong and one weak target:
  * quality-threshold, score weak-quality: strong iff P(weak ok) < threshold;
  * quality-threshold, score win-rate: strong iff 1 - max(0, P(strong ok) - P(weak ok)) < threshold;
  * cheapest-fit with a request's min_quality: the weak (cheaper) target fits iff P(weak ok) >=
    min_quality, so strong iff P(weak ok) < min_quality (other constraints aside).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from policies.tuning.datasets import RouteTable


@dataclass
class Sweep:
    """Every threshold that changes the routing, with its outcome (index m = m strong calls)."""

    threshold: np.ndarray
    share: np.ndarray
    quality: np.ndarray
    cost_per_1k: np.ndarray


def out_of_fold_predictions(table: RouteTable, emb: np.ndarray, kind: str = "knn", k: int = 5,
                            seed: int = 0) -> np.ndarray:
    """(n, T) predicted P(acceptable) per target, each row from a predictor not trained on it."""
    from policies.tuning.evaluate import kfold
    from policies.tuning.train import fit

    out = np.zeros_like(table.quality, dtype=float)
    for fold in kfold(len(table), k, seed):
        train = np.setdiff1d(np.arange(len(table)), fold)
        pred = fit(table.subset(train), emb[train], kind).predict_embeddings(emb[fold])
        for j, t in enumerate(table.targets):
            out[fold, j] = pred[t]
    return out


def serving_score(p_strong: np.ndarray, p_weak: np.ndarray, score: str) -> np.ndarray:
    if score == "weak-quality":
        return p_weak
    if score == "win-rate":
        return 1.0 - np.maximum(0.0, p_strong - p_weak)
    raise ValueError(f"unknown score {score!r}")


def sweep(score: np.ndarray, q_strong: np.ndarray, q_weak: np.ndarray, c_strong: np.ndarray,
          c_weak: np.ndarray) -> Sweep:
    """Strong iff score < threshold: sort ascending, the first m prompts go strong."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    n = len(s)
    gain_q = np.concatenate([[0.0], np.cumsum((q_strong - q_weak)[order])])
    gain_c = np.concatenate([[0.0], np.cumsum((c_strong - c_weak)[order])])
    # threshold for m strong calls: between s[m-1] and s[m]; only where consecutive scores differ
    ok = np.ones(n + 1, dtype=bool)
    ok[1:n] = s[1:] > s[:-1]
    thr = np.empty(n + 1)
    thr[0] = s[0]
    thr[n] = min(1.0, s[-1] + 1e-6) if s[-1] < 1.0 else 1.0
    thr[1:n] = (s[:-1] + s[1:]) / 2
    m = np.arange(n + 1)[ok]
    return Sweep(threshold=np.clip(thr[ok], 0.0, 1.0), share=m / n,
                 quality=(q_weak.sum() + gain_q[ok]) / n,
                 cost_per_1k=1000 * (c_weak.sum() + gain_c[ok]) / n)


def choose(sw: Sweep, *, strong_share: float | None = None, budget_per_1k: float | None = None,
           min_pgr: float | None = None, weak_q: float = 0.0, strong_q: float = 1.0) -> int:
    """Index of the operating point meeting the goal."""
    if strong_share is not None:
        return int(np.argmin(np.abs(sw.share - strong_share)))
    if budget_per_1k is not None:
        fits = np.flatnonzero(sw.cost_per_1k <= budget_per_1k + 1e-12)
        if not len(fits):
            return 0
        return int(fits[np.argmax(sw.quality[fits])])
    if min_pgr is not None:
        pgr = (sw.quality - weak_q) / (strong_q - weak_q)
        hit = np.flatnonzero(pgr >= min_pgr)
        return int(hit[0]) if len(hit) else len(sw.share) - 1
    raise ValueError("give strong_share, budget_per_1k or min_pgr")


def snippet(policy: str, value: float, strong: str, weak: str, score: str, kind: str,
            artifact: str) -> str:
    quality = f"quality:\n  kind: {kind}\n  artifact: {artifact}\n"
    if policy == "quality-threshold":
        return (f"policy:\n  name: quality-threshold\n  strong: {strong}\n  weak: {weak}\n"
                f"  threshold: {value:.4f}\n  score: {score}\n{quality}")
    return (f"policy:\n  name: cheapest-fit\n{quality}"
            f"# per request: \"routing\": {{\"min_quality\": {value:.4f}}} or header "
            f"x-router-min-quality: {value:.4f}\n")


def calibrate(table: RouteTable, emb: np.ndarray, *, policy: str = "quality-threshold",
              score: str = "weak-quality", kind: str = "knn", artifact: str = "PATH/TO/ARTIFACT",
              **goal: float | None) -> dict:
    s, w = table.col(table.strong), table.col(table.weak)
    pred = out_of_fold_predictions(table, emb, kind)
    sc = serving_score(pred[:, s], pred[:, w], "weak-quality" if policy == "cheapest-fit" else score)
    cost = table.costs()
    qs, qw = table.quality[:, s], table.quality[:, w]
    sw = sweep(sc, qs, qw, cost[:, s], cost[:, w])
    i = choose(sw, weak_q=float(qw.mean()), strong_q=float(qs.mean()), **goal)
    value = float(sw.threshold[i])
    return {
        "policy": policy,
        "score": score if policy == "quality-threshold" else "weak-quality",
        "predictor": kind,
        "strong": table.strong,
        "weak": table.weak,
        "threshold" if policy == "quality-threshold" else "min_quality": value,
        "strong_share": float(sw.share[i]),
        "quality": float(sw.quality[i]),
        "pgr": float((sw.quality[i] - qw.mean()) / (qs.mean() - qw.mean())),
        "cost_per_1k_usd": float(sw.cost_per_1k[i]),
        "weak_quality": float(qw.mean()),
        "strong_quality": float(qs.mean()),
        "snippet": snippet(policy, value, table.strong, table.weak, score, kind, artifact),
    }


def cmd_calibrate(args: argparse.Namespace) -> int:
    from policies.tuning.cli import _emit, _load_table, embeddings_for

    table = _load_table(args)
    emb = embeddings_for(table, args.encoder)
    r = calibrate(table, emb, policy=args.policy, score=args.score, kind=args.kind,
                  artifact=args.artifact, strong_share=args.strong_share,
                  budget_per_1k=args.budget_per_1k, min_pgr=args.min_pgr)
    key = "threshold" if args.policy == "quality-threshold" else "min_quality"
    text = (f"{key} {r[key]:.4f}: strong share {100 * r['strong_share']:.1f}%, quality {r['quality']:.3f} "
            f"(PGR {r['pgr']:.2f}), ${r['cost_per_1k_usd']:.3f} per 1k requests "
            f"(out-of-fold {r['predictor']} predictions on {len(table)} prompts)\n\n"
            f"# cluster.yaml\n{r['snippet']}")
    _emit(args, r, text)
    return 0
