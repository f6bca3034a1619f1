"""Offline replay of routers over a dataset table: K-fold CV or leave-one-dataset-out holdout.

Learned scorers are fitted on the train rows of each split and score only the held-out rows; the
out-of-fold scores of all rows then go through RouteLLM's threshold sweep once (so a 5-fold CV result
is one curve over the whole dataset, like RouteLLM's). Random and oracle need no training.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.tuning import metrics
from policies.tuning.datasets import RouteTable
from policies.tuning.scorers import SCORERS, RandomScorer, Split


@dataclass
class Protocol:
    kind: str  # "cv", "holdout" (leave one dataset out) or "split" (given train and test rows)
    k: int = 5
    holdout: str | None = None
    test_mask: np.ndarray | None = None  # "split": True on the test rows

    def label(self) -> str:
        if self.kind == "cv":
            return f"{self.k}-fold CV"
        return f"holdout {self.holdout}" if self.kind == "holdout" else "train/test"


def eval_mask_of(table: RouteTable, protocol: Protocol) -> np.ndarray:
    """Rows whose held-out outcome is reported."""
    if protocol.kind == "holdout":
        mask = table.dataset == protocol.holdout
        if not mask.any():
            raise ValueError(f"no rows of dataset {protocol.holdout!r} to hold out")
        if mask.all():
            raise ValueError("holdout needs other datasets to train on (use --dataset all)")
        return np.asarray(mask, dtype=bool)
    if protocol.kind == "split":
        assert protocol.test_mask is not None and len(protocol.test_mask) == len(table)
        if protocol.test_mask.all() or not protocol.test_mask.any():
            raise ValueError("a train/test split needs rows on both sides")
        return np.asarray(protocol.test_mask, dtype=bool)
    if protocol.k < 2 or protocol.k > len(table):
        raise ValueError(f"--cv needs 2 <= K <= rows ({len(table)}), got {protocol.k}")
    return np.ones(len(table), dtype=bool)


def splits_of(table: RouteTable, protocol: Protocol, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) pairs: K folds of the evaluated rows, or the one given split."""
    mask = eval_mask_of(table, protocol)
    ev = np.flatnonzero(mask)
    if protocol.kind == "cv":
        return [(np.setdiff1d(ev, ev[f]), ev[f]) for f in kfold(len(ev), protocol.k, seed)]
    return [(np.flatnonzero(~mask), ev)]


def reference_rows(table: RouteTable, protocol: Protocol) -> np.ndarray:
    """Rows a router may learn its reference pair from: never the held-out test labels. In CV every row
    trains some fold, so all rows; a holdout or split uses only its train side."""
    if protocol.kind == "cv":
        return np.arange(len(table))
    return np.flatnonzero(~eval_mask_of(table, protocol))


def kfold(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffled K folds of row indices."""
    idx = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(idx, k)]


def _tie_break(scores: np.ndarray, seed: int) -> np.ndarray:
    """Break exact ties at random (a tied router is a random router among the tied prompts); without
    this a score with few distinct values would put whole groups on one side of a threshold."""
    spread = np.ptp(scores) if len(scores) else 0.0
    jitter = np.random.default_rng(seed).random(len(scores)) * 1e-9 * (spread or 1.0)
    return scores + jitter


def out_of_fold_scores(
    table: RouteTable,
    emb: np.ndarray | None,
    scorer_names: Sequence[str],
    protocol: Protocol,
    eval_mask: np.ndarray,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Scores of every evaluated row from scorers that never saw that row's label."""
    from tqdm import tqdm

    strong, weak = pair_of(table, protocol)
    ev = np.flatnonzero(eval_mask)
    splits = splits_of(table, protocol, seed)
    out = {name: np.zeros(len(table)) for name in scorer_names}
    jobs = [(name, tr, te) for name in scorer_names for tr, te in splits]
    bar = tqdm(jobs, desc=f"training ({protocol.label()})", file=sys.stderr, disable=not progress)
    for name, tr, te in bar:
        bar.set_postfix_str(name)
        sc = SCORERS[name]()
        train = Split(table.subset(tr), None if emb is None else emb[tr], strong, weak)
        test = Split(table.subset(te), None if emb is None else emb[te], strong, weak)
        out[name][te] = sc.fit(train).score(test)
    return {k: v[ev] for k, v in out.items()}


def evaluate(
    table: RouteTable,
    protocol: Protocol,
    scorer_names: Sequence[str],
    emb: np.ndarray | None = None,
    seed: int = 0,
    prices: dict[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> dict:
    """Two targets: replay random, oracle and the learned scorers with RouteLLM's sweep, plus the
    many-target figures of each curve; return the report dict (`--json` output). More targets: see
    `policies.tuning.many.evaluate_many`."""
    eval_mask = eval_mask_of(table, protocol)
    si, wi = pair_of(table, protocol)
    strong_id, weak_id = table.targets[si], table.targets[wi]
    need_emb = any(SCORERS[n]().needs_embeddings for n in scorer_names)
    if need_emb and emb is None:
        raise ValueError("these scorers need embeddings")
    scores = out_of_fold_scores(table, emb if need_emb else None, scorer_names, protocol, eval_mask,
                                seed, progress) if scorer_names else {}
    ev = table.subset(eval_mask)
    qs, qw = ev.quality[:, si], ev.quality[:, wi]
    cost = ev.costs(prices)
    cs, cw = cost[:, si], cost[:, wi]
    weak_q, strong_q = float(qw.mean()), float(qs.mean())
    # RouteLLM's x-axis is the share of calls to the dearer target (its strong model is the dearer
    # one). When the better target is the cheaper, scores are flipped so the curve still counts calls
    # to the dearer target, and the oracle's ties (no gain) go to the cheaper one either way.
    ref_cost = table.costs(prices)[reference_rows(table, protocol)].mean(axis=0)
    strong_dearer = bool(ref_cost[si] >= ref_cost[wi])
    if strong_dearer:
        qd, qc, cd, cc, sign = qs, qw, cs, cw, 1.0
    else:
        qd, qc, cd, cc, sign = qw, qs, cw, cs, -1.0
    single_q = np.array([qs.mean(), qw.mean()])
    single_c = np.array([cs.mean(), cw.mean()])
    cost_range = (float(single_c.min()), float(single_c.max()))
    rows = []
    random_scores = RandomScorer(seed).score(Split(ev, None, si, wi))
    curves = {"random": metrics.routing_curve(sign * random_scores, qd, qc, cd, cc),
              "oracle": metrics.oracle_curve(qd, qc, cd, cc)}
    for name, sc in scores.items():
        cascade = SCORERS[name]().pays_weak
        curves[name] = metrics.routing_curve(sign * _tie_break(sc, seed), qd, qc,
                                              cd + cc if cascade else cd, cc)
    for name, curve in curves.items():
        row = {"name": name, **metrics.summarize(curve, weak_q, strong_q, cost_range)}
        row.update(metrics.summarize_n(curve.cost, curve.quality, single_q, single_c))
        row["curve"] = {"share": curve.share.tolist(), "quality": curve.quality.tolist(),
                        "cost_usd": curve.cost.tolist()}
        row["operating_points"] = [
            {"share": float(curve.share[i]), "quality": float(curve.quality[i]),
             "cost_per_1k_usd": 1000 * float(curve.cost[i]),
             "pgr": metrics.pgr(float(curve.quality[i]), weak_q, strong_q)}
            for i in range(len(curve.share)) if round(curve.share[i] * 10) in (2, 5, 8)
        ]
        rows.append({k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()})
    notes = [] if strong_dearer else [
        f"the better target {strong_id} is also the cheaper: shares and CPT count calls to the dearer "
        f"target {weak_id}, and routing can only lose quality or save nothing"]
    return {
        "dataset": sorted({str(d) for d in ev.dataset}),
        "protocol": protocol.label(),
        "n": len(ev),
        "strong": strong_id,
        "weak": weak_id,
        "dearer": strong_id if strong_dearer else weak_id,
        "strong_quality": strong_q,
        "weak_quality": weak_q,
        "strong_cost_per_1k_usd": 1000 * float(cs.mean()),
        "weak_cost_per_1k_usd": 1000 * float(cw.mean()),
        "targets": [{"id": strong_id, "quality": strong_q, "cost_usd": float(cs.mean())},
                    {"id": weak_id, "quality": weak_q, "cost_usd": float(cw.mean())}],
        "notes": notes,
        "policies": rows,
    }


def pair_of(table: RouteTable, protocol: Protocol) -> tuple[int, int]:
    """(strong, weak) columns of a two-target table: the better and the worse on the reference rows
    (the train side of a holdout or split: its test labels never choose the pair)."""
    ref = reference_rows(table, protocol)
    mean = table.quality[ref].mean(axis=0)
    s, w = int(np.argmax(mean)), int(np.argmin(mean))
    if s == w:  # equal means: keep the file's order
        s, w = 0, 1
    return s, w


def best_learned(report: dict) -> dict | None:
    learned = [p for p in report["policies"] if p["name"] not in ("random", "oracle")]
    return max(learned, key=lambda p: p["apgr"]) if learned else None


def markdown(report: dict) -> str:
    """The report as a markdown table (shares as percentages)."""
    lines = [
        f"## {', '.join(report['dataset'])} ({report['protocol']}, n={report['n']})",
        "",
        f"strong `{report['strong']}` quality {report['strong_quality']:.3f}, "
        f"weak `{report['weak']}` quality {report['weak_quality']:.3f}",
        "",
        *[f"note: {n}" for n in report.get("notes", [])],
        "",
        "| policy | APGR | CPT(20%) | CPT(50%) | CPT(80%) | AIQ | quality @50% strong | $/1k @50% "
        "| cost to match best | arena |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(report["policies"], key=lambda r: -r["apgr"]):
        mid = next((o for o in p["operating_points"] if round(o["share"] * 10) == 5), None)
        q50 = f"{mid['quality']:.3f}" if mid else "-"
        c50 = f"{mid['cost_per_1k_usd']:.3f}" if mid else "-"
        lines.append(
            f"| {p['name']} | {p['apgr']:.3f} | {100 * p['cpt20']:.1f}% | {100 * p['cpt50']:.1f}% | "
            f"{100 * p['cpt80']:.1f}% | {p['aiq']:.3f} | {q50} | {c50} | "
            f"{_share(p.get('cost_to_match_best'))} | {p.get('arena', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def _share(x: float | None) -> str:
    return "never" if x is None else f"{100 * x:.1f}%"


def plot(report: dict, out_prefix: str) -> list[str]:
    """Two PNGs: quality vs strong-call share (with oracle, random, weak and strong lines), and
    cost vs quality. Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{', '.join(report['dataset'])} ({report['protocol']})"
    files = []
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_prop_cycle(color=list(plt.get_cmap("tab20")(np.arange(20))))
    for p in report["policies"]:
        style: dict[str, dict[str, Any]] = {"oracle": dict(linestyle=":", marker="x"),
                                            "random": dict(linestyle="--", marker=".")}
        ax.plot(100 * np.array(p["curve"]["share"]), p["curve"]["quality"], label=p["name"],
                **style.get(p["name"], dict(marker=".")))
    ax.axhline(report["weak_quality"], color="grey", linestyle="--", label=f"weak {report['weak']}")
    ax.axhline(report["strong_quality"], color="red", linestyle="--", label=f"strong {report['strong']}")
    ax.set(xlabel="strong-model calls (%)", ylabel="quality", title=title)
    ax.legend(fontsize=7)
    files.append(f"{out_prefix}-quality.png")
    fig.savefig(files[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_prop_cycle(color=list(plt.get_cmap("tab20")(np.arange(20))))
    for p in report["policies"]:
        ax.plot(1000 * np.array(p["curve"]["cost_usd"]), p["curve"]["quality"], marker=".",
                label=p["name"])
    ax.set(xlabel="cost per 1k requests (USD)", ylabel="quality", title=title)
    ax.legend(fontsize=7)
    files.append(f"{out_prefix}-cost.png")
    fig.savefig(files[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return files
