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
    return aiq_points(curve.cost, curve.quality, cost_range)


def aiq_points(cost: np.ndarray, quality: np.ndarray,
               cost_range: tuple[float, float] | None = None) -> float:
    """AIQ of (cost, quality) operating points over `cost_range` (default: the points' own range).

    Above the dearest hull point the hull stays flat (paying more never lowers the best reachable
    quality). Below the cheapest point nothing is reachable, so that part counts as quality 0: a router
    that cannot run as cheaply as the cheapest single target earns nothing there. Every swept router
    here reaches the cheap end (min_quality 0 or an infinite cost weight sends all to the cheapest).
    """
    cost, quality = np.asarray(cost, float), np.asarray(quality, float)
    hx, hy = upper_hull(cost, quality)
    lo, hi = cost_range if cost_range else (float(cost.min()), float(cost.max()))
    if hi <= lo:  # one cost level (e.g. every target at one price): the best quality reachable there
        reach = hy[hx <= hi * (1 + 1e-9) + 1e-15]
        return float(reach.max()) if len(reach) else 0.0
    if hx[0] <= lo + 1e-9 * max(abs(lo), abs(hi)) + 1e-15:
        hx = hx.copy()
        hx[0] = min(hx[0], lo)  # float noise: the all-cheapest point sits exactly at lo
        left = float(hy[0])
    else:
        left = 0.0
    # the hull's own corners in the grid make the trapezoid sum exact for the piecewise-linear hull
    inner = hx[(hx > lo) & (hx < hi)]
    grid = np.unique(np.concatenate([np.linspace(lo, hi, 2001), inner, np.nextafter(inner[:1], -np.inf)]))
    vals = np.interp(grid, hx, hy, left=left, right=hy[-1])
    vals[grid < hx[0]] = left
    return float(np.trapezoid(vals, grid) / (hi - lo))


# --- many targets --------------------------------------------------------------------------------------

ARENA_BETA = 0.1
ARENA_C_MAX = 200.0  # USD per 1k queries at which the cost score C is 0 (RouterArena, arXiv 2510.00202)
ARENA_C_MIN = 0.0044  # USD per 1k queries at which C is 1
_TOL = 1e-9


def arena_score(accuracy: float, cost_per_1k_usd: float, beta: float = ARENA_BETA) -> tuple[float, bool]:
    """RouterArena's score S = (1 + b) A C / (b A + C), C = (log2 200 - log2 c) / (log2 200 - log2 0.0044)
    with c in USD per 1k queries; C is clamped to [0, 1]. Returns (S, whether C was clamped)."""
    c = max(float(cost_per_1k_usd), 1e-300)  # log2(0) is -inf: a free router gets C = 1 (clamped)
    raw = (np.log2(ARENA_C_MAX) - np.log2(c)) / (np.log2(ARENA_C_MAX) - np.log2(ARENA_C_MIN))
    cs = float(min(1.0, max(0.0, raw)))
    a = float(accuracy)
    den = beta * a + cs
    return (float((1 + beta) * a * cs / den) if den > 0 else 0.0), bool(cs != raw)


def best_target(quality: np.ndarray, cost: np.ndarray) -> int:
    """Index of the best single target: highest quality, ties to the cheaper (then the first)."""
    q, c = np.asarray(quality, float), np.asarray(cost, float)
    top = np.flatnonzero(q >= q.max() - _TOL)
    return int(top[np.argmin(c[top])])


def cheapest_target(quality: np.ndarray, cost: np.ndarray) -> int:
    """Index of the cheapest single target, ties to the better (then the first)."""
    q, c = np.asarray(quality, float), np.asarray(cost, float)
    low = np.flatnonzero(c <= c.min() + _TOL * max(abs(c.min()), 1e-300))
    return int(low[np.argmax(q[low])])


def cost_to_reach(cost: np.ndarray, quality: np.ndarray, target_q: float) -> float | None:
    """Cost of the cheapest operating point whose quality reaches target_q, None when none does.

    Only real operating points (settings of the knob) count, not mixtures of two settings on the hull:
    the number is what one configured router costs."""
    cost, quality = np.asarray(cost, float), np.asarray(quality, float)
    ok = quality >= target_q - _TOL
    return float(cost[ok].min()) if ok.any() else None


def quality_within(cost: np.ndarray, quality: np.ndarray, budget: float) -> float | None:
    """Best quality among operating points costing at most `budget`, None when none is that cheap."""
    cost, quality = np.asarray(cost, float), np.asarray(quality, float)
    ok = cost <= budget * (1 + _TOL) + 1e-15
    return float(quality[ok].max()) if ok.any() else None


def summarize_n(cost: np.ndarray, quality: np.ndarray, target_quality: np.ndarray,
                target_cost: np.ndarray) -> dict[str, object]:
    """The many-target figures of one router's operating points (cost = mean USD per request).

    aiq: over the single targets' cost range; cost_to_match_best: cheapest point reaching the best
    single target's quality, as a fraction of that target's cost (None = never); quality_at_cheapest_cost:
    best quality at no more than the cheapest target's cost (None = no point that cheap); best_quality;
    arena: RouterArena's score at the router's best point for it, with that point and whether C was
    clamped there."""
    cost, quality = np.asarray(cost, float), np.asarray(quality, float)
    tq, tc = np.asarray(target_quality, float), np.asarray(target_cost, float)
    b, ch = best_target(tq, tc), cheapest_target(tq, tc)
    match = cost_to_reach(cost, quality, float(tq[b]))
    scores = [arena_score(q, 1000 * c) for q, c in zip(quality, cost, strict=True)]
    i = int(np.argmax([s for s, _ in scores]))
    return {
        "aiq": aiq_points(cost, quality, (float(tc.min()), float(tc.max()))),
        "best_quality": float(quality.max()),
        "cost_to_match_best": None if match is None else (match / tc[b] if tc[b] > 0 else 0.0),
        "quality_at_cheapest_cost": quality_within(cost, quality, float(tc[ch])),
        "arena": scores[i][0],
        "arena_clamped": scores[i][1],
        "arena_point": {"quality": float(quality[i]), "cost_per_1k_usd": float(1000 * cost[i])},
    }


def oracle_choices(q: np.ndarray, c: np.ndarray, weight: float = 0.0) -> np.ndarray:
    """Per prompt, the target maximising quality - weight x cost (labels known); ties go to the
    cheaper target, then to the first. weight 0: the cheapest target that answers best."""
    q, c = np.asarray(q, float), np.asarray(c, float)
    u = q - weight * c
    top = u >= u.max(axis=1, keepdims=True) - _TOL
    return np.argmin(np.where(top, c, np.inf), axis=1)


def oracle_weights(q: np.ndarray, c: np.ndarray, num: int = 60) -> np.ndarray:
    """Cost weights that trace the oracle's frontier: 0, quantiles of the per-prompt exchange rates
    (quality gained per USD between two targets), and one large enough that all go to the cheapest."""
    q, c = np.asarray(q, float), np.asarray(c, float)
    dq = q[:, :, None] - q[:, None, :]
    dc = c[:, :, None] - c[:, None, :]
    rates = (dq / np.where(dc > 0, dc, np.nan))[(dq > 0) & (dc > 0)]
    if not len(rates):
        return np.array([0.0])
    mids = np.quantile(rates, np.linspace(0.0, 1.0, num))
    return np.unique(np.concatenate([[0.0], mids * (1 - 1e-9), [2 * rates.max()]]))


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
