"""Router metrics, with RouteLLM's exact definitions so numbers compare with its paper.

RouteLLM (arXiv 2406.18665; lm-sys/RouteLLM routellm/evals/benchmarks.py and evaluate.py):
  * thresholds are the 11 bin edges of `pd.qcut(scores, 10)`, i.e. the 0, 10, ..., 100% quantiles of
    the router's score (linear interpolation); a prompt goes to the strong model when score >= edge,
    except at the last edge where it is score > edge (so that point is 0% strong);
  * each edge gives one (actual strong-call share, mean quality) point;
  * APGR = (trapezoid area under that curve - weak area) / (strong area - weak area), areas taken over
    the range of shares the points span (0..1 in practice);
  * CPT(x) = the strong-call share at which the curve reaches weak + x (strong - weak), by linear
    interpolation (RouteLLM calls np.interp on the curve; we take the first crossing, which is the same
    number whenever quality rises with the share and stays defined when a noisy curve dips).
RouterBench (arXiv 2403.12031): AIQ = area under the non-decreasing convex hull of the (cost, quality)
points, divided by the cost range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_RESULTS = 10


@dataclass
class Curve:
    """Operating points of one router, sorted by strong-call share."""

    share: np.ndarray  # fraction of prompts sent to the strong model
    quality: np.ndarray  # mean quality of the routed answers
    cost: np.ndarray  # mean USD per prompt
    threshold: np.ndarray  # score threshold of each point (nan for the oracle)


def routing_curve(
    scores: np.ndarray,
    q_strong: np.ndarray,
    q_weak: np.ndarray,
    c_strong: np.ndarray | None = None,
    c_weak: np.ndarray | None = None,
    num_results: int = NUM_RESULTS,
) -> Curve:
    """RouteLLM's sweep: thresholds at the quantiles of the router's score (higher = more strong)."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    c_strong = np.zeros(n) if c_strong is None else np.asarray(c_strong, dtype=float)
    c_weak = np.zeros(n) if c_weak is None else np.asarray(c_weak, dtype=float)
    edges = np.quantile(scores, np.linspace(0.0, 1.0, num_results + 1))
    share, qual, cost = [], [], []
    for i, thr in enumerate(edges):
        sel = scores >= thr if i != len(edges) - 1 else scores > thr
        share.append(sel.mean())
        qual.append(np.where(sel, q_strong, q_weak).mean())
        cost.append(np.where(sel, c_strong, c_weak).mean())
    order = np.argsort(np.asarray(share), kind="stable")
    return Curve(
        share=np.asarray(share)[order],
        quality=np.asarray(qual)[order],
        cost=np.asarray(cost)[order],
        threshold=edges[order],
    )


def oracle_curve(
    q_strong: np.ndarray,
    q_weak: np.ndarray,
    c_strong: np.ndarray | None = None,
    c_weak: np.ndarray | None = None,
    num_results: int = NUM_RESULTS,
) -> Curve:
    """RouteLLM's `get_optimal_accuracy`: with a budget of share x N strong calls, spend them on the
    prompts where the strong model gains most (weak wrong and strong right, for 0/1 quality)."""
    q_strong, q_weak = np.asarray(q_strong, float), np.asarray(q_weak, float)
    n = len(q_strong)
    c_strong = np.zeros(n) if c_strong is None else np.asarray(c_strong, dtype=float)
    c_weak = np.zeros(n) if c_weak is None else np.asarray(c_weak, dtype=float)
    gain = q_strong - q_weak
    order = np.argsort(-gain, kind="stable")
    pos = int((gain > 0).sum())
    cum_gain = np.concatenate([[0.0], np.cumsum(gain[order])])
    cum_cost = np.concatenate([[0.0], np.cumsum((c_strong - c_weak)[order])])
    shares = np.linspace(0.0, 1.0, num_results + 1)
    qual, cost = [], []
    for s in shares:
        k = min(s * n, pos)  # the oracle never calls the strong model where it does not help
        qual.append((q_weak.sum() + np.interp(k, np.arange(n + 1), cum_gain)) / n)
        cost.append((c_weak.sum() + np.interp(k, np.arange(n + 1), cum_cost)) / n)
    return Curve(share=shares, quality=np.array(qual), cost=np.array(cost),
                 threshold=np.full(len(shares), np.nan))


def apgr(curve: Curve, weak: float, strong: float) -> float:
    """Average performance gap recovered: (AUC - weak area) / (strong area - weak area)."""
    span = curve.share[-1] - curve.share[0]
    if span <= 0 or strong == weak:
        return float("nan")
    auc = float(np.trapezoid(curve.quality, curve.share))
    return (auc - weak * span) / ((strong - weak) * span)


def cpt(curve: Curve, x: float, weak: float, strong: float) -> float:
    """Call-performance threshold: the strong-call share needed to reach PGR x (x in 0..1)."""
    target = weak + x * (strong - weak)
    s, q = curve.share, curve.quality
    if q[0] >= target:
        return float(s[0])
    for i in range(1, len(s)):
        if q[i] >= target:
            if q[i] == q[i - 1]:
                return float(s[i])
            return float(s[i - 1] + (target - q[i - 1]) * (s[i] - s[i - 1]) / (q[i] - q[i - 1]))
    return float(s[-1])  # never reached: np.interp clamps to the last point too


def pgr(quality: float, weak: float, strong: float) -> float:
    return (quality - weak) / (strong - weak) if strong != weak else float("nan")


def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of (cost, quality) points (RouterBench)."""
    pts = sorted(zip(np.asarray(cost, float), np.asarray(quality, float), strict=True))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            if p[1] <= hull[-1][1]:
                continue
            hull.pop()
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()  # the middle point lies on or below the chord
            else:
                break
        hull.append(p)
    hx, hy = np.array([h[0] for h in hull]), np.array([h[1] for h in hull])
    return hx, np.maximum.accumulate(hy)  # paying more never lowers the best reachable quality


def aiq(curve: Curve, cost_range: tuple[float, float] | None = None) -> float:
    """Average improvement in quality: area under the hull over [c_min, c_max] / (c_max - c_min)."""
    hx, hy = upper_hull(curve.cost, curve.quality)
    lo, hi = cost_range if cost_range else (float(curve.cost.min()), float(curve.cost.max()))
    if hi <= lo:
        return float(hy.max())
    grid = np.linspace(lo, hi, 2001)
    # Below the cheapest hull point nothing is reachable at that cost; count the cheapest point's quality
    # there only if it lies within the range (it does for every router: share 0 costs all-weak).
    vals = np.interp(grid, hx, hy, left=hy[0], right=hy[-1])
    return float(np.trapezoid(vals, grid) / (hi - lo))


def summarize(curve: Curve, weak: float, strong: float,
              cost_range: tuple[float, float] | None = None) -> dict[str, float]:
    """APGR, CPT(20/50/80%) as fractions, AIQ; the numbers `tune eval --json` reports."""
    return {
        "apgr": apgr(curve, weak, strong),
        "cpt20": cpt(curve, 0.2, weak, strong),
        "cpt50": cpt(curve, 0.5, weak, strong),
        "cpt80": cpt(curve, 0.8, weak, strong),
        "aiq": aiq(curve, cost_range),
    }
