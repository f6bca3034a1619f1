"""`tune calibrate`: choose a policy's knob for a goal by replaying the real serving policy and predictor.

The knob is the one the policy's config class names (`sweep_knob`: cheapest-fit's min_quality,
quality-threshold's threshold, utility's cost_weight). Every candidate value is replayed with
`policies.tuning.replay` (build_policy + build_quality on a saved artifact, `decide` per prompt) on
held-out rows: out-of-fold over K folds of --data, or the --test rows with the predictor fitted on
--train. Goals: a budget per 1k requests (best quality within it), a quality floor (cheapest setting
reaching it), a share of calls to one target, or (two targets) a PGR. After the choice the printed
snippet is parsed back and replayed once more; the promise reported is what that replay measured,
so it is what the configured policy does on those rows (with --train/--test and `--save-artifact`, the
very artifact it names). A goal no setting meets is reported with a warning and `goal_met: false`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.tuning import replay
from policies.tuning.datasets import RouteTable


@dataclass
class Sweep:
    """Every threshold that changes the routing, with its outcome (index m = m strong calls)."""

    threshold: np.ndarray
    share: np.ndarray
    quality: np.ndarray
    cost_per_1k: np.ndarray


def sweep(score: np.ndarray, q_strong: np.ndarray, q_weak: np.ndarray, c_strong: np.ndarray,
          c_weak: np.ndarray) -> Sweep:
    """Strong iff score < threshold: sort ascending, the first m prompts go strong (a two-target view
    of a score, kept for analysis; `calibrate` replays the policy itself)."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    n = len(s)
    gain_q = np.concatenate([[0.0], np.cumsum((q_strong - q_weak)[order])])
    gain_c = np.concatenate([[0.0], np.cumsum((c_strong - c_weak)[order])])
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


def _round(v: float) -> float:
    """Knob values as the snippet prints them (4 significant digits), replayed exactly so."""
    return float(f"{v:.4g}")


@dataclass
class Points:
    values: list[float]
    quality: np.ndarray
    cost_per_1k: np.ndarray
    rejected: np.ndarray
    shares: np.ndarray  # (values, targets)


def _measure(spec: replay.RouterSpec, fitted: Sequence[replay.Fitted], table: RouteTable,
             costs: np.ndarray, values: Sequence[float], progress: bool) -> Points:
    r = replay.replay(spec, fitted, table, costs, knob_values=list(values), progress=progress)
    out = replay.outcomes(r["choice"], r["rows"], table.quality, costs, table.targets)
    return Points(list(values), out["quality"], 1000 * out["cost"], out["rejected"], out["shares"])


def _merge(a: Points, b: Points) -> Points:
    vals = a.values + b.values
    order = np.argsort(vals, kind="stable")
    cat = lambda x, y: np.concatenate([x, y])[order]  # noqa: E731
    return Points([vals[i] for i in order], cat(a.quality, b.quality), cat(a.cost_per_1k, b.cost_per_1k),
                  cat(a.rejected, b.rejected), np.concatenate([a.shares, b.shares])[order])


def choose(pts: Points, goal: dict[str, Any], col: dict[str, int], weak_q: float,
           strong_q: float) -> tuple[int, bool, str | None]:
    """(index, goal met, warning) of the setting meeting the goal; ties go to the cheaper setting."""
    q, c = pts.quality, pts.cost_per_1k
    by_cost = np.lexsort((-q, c))  # cheapest first, then better
    if goal.get("budget_per_1k") is not None:
        b = goal["budget_per_1k"]
        fits = [i for i in np.lexsort((c, -q)) if c[i] <= b * (1 + 1e-12)]
        if not fits:
            i = int(by_cost[0])
            return i, False, (f"no setting meets the budget ${b:g} per 1k requests: the cheapest costs "
                              f"${c[i]:.4g} per 1k (returned, over budget)")
        return int(fits[0]), True, None
    if goal.get("quality_floor") is not None:
        f = goal["quality_floor"]
        ok = [i for i in by_cost if q[i] >= f - 1e-12]
        if not ok:
            i = int(np.lexsort((c, -q))[0])
            return i, False, (f"no setting reaches quality {f:g}: the best reaches {q[i]:.4f} "
                              f"(returned, below the floor)")
        return int(ok[0]), True, None
    if goal.get("share") is not None:
        t, want = goal["share"]
        s = pts.shares[:, col[t]]
        i = int(np.lexsort((c, np.abs(s - want)))[0])
        met = abs(s[i] - want) <= 0.02
        return i, met, None if met else (f"the nearest share of calls to {t} is {s[i]:.3f}, not {want:g} "
                                         "(the knob cannot split the prompts finer here)")
    if goal.get("min_pgr") is not None:
        x = goal["min_pgr"]
        pgr = (q - weak_q) / (strong_q - weak_q) if strong_q != weak_q else np.zeros(len(q))
        ok = [i for i in by_cost if pgr[i] >= x - 1e-12]
        if not ok:
            i = int(np.argmax(pgr))
            return i, False, f"no setting reaches PGR {x:g}: the best reaches {pgr[i]:.3f}"
        return int(ok[0]), True, None
    raise ValueError("give budget_per_1k, quality_floor, share, strong_share or min_pgr")


def snippet(policy_cfg: dict[str, Any], quality_cfg: dict[str, Any], knob: str,
            targets: Sequence[Any] = ()) -> str:
    import yaml

    text = yaml.safe_dump({"policy": policy_cfg, "quality": quality_cfg}, sort_keys=False)
    if targets:  # what the replay assumed of the targets' own config (prices, priors for abstention)
        text += "# replayed with targets (USD per 1M in/out, quality_prior): " + ", ".join(
            f"{t.id} {t.input_price_per_mtok:g}/{t.output_price_per_mtok:g} {t.quality_prior:.3f}"
            for t in targets) + "\n"
    if knob == "min_quality":
        v = policy_cfg.get("min_quality")
        text += (f"# or per request: \"routing\": {{\"min_quality\": {v}}} or header x-router-min-quality: "
                 f"{v} (a request's own bound wins over the config's)\n")
    return text


def calibrate(table: RouteTable, emb: np.ndarray | None, *, policy: str = "quality-threshold",
              score: str = "weak-quality", kind: str = "knn", artifact: str = "PATH/TO/ARTIFACT",
              k: int = 5, protocol: Any = None, seed: int = 0, encoder: Any = None,
              policy_params: dict[str, Any] | None = None, predictor_params: dict[str, Any] | None = None,
              save_artifact: str | None = None, progress: bool = False,
              strong_share: float | None = None, budget_per_1k: float | None = None,
              min_pgr: float | None = None, quality_floor: float | None = None,
              share: tuple[str, float] | None = None) -> dict[str, Any]:
    from policies.tuning.evaluate import Protocol, splits_of

    protocol = protocol or Protocol("cv", k=k)
    splits = splits_of(table, protocol, seed)
    costs = table.costs()
    params = dict(policy_params or {})
    if policy == "quality-threshold":
        params.setdefault("score", score)
    spec = replay.RouterSpec(policy, kind, params, dict(predictor_params or {}))
    knob, grid = replay.sweep_of(policy)
    if knob is None:
        raise ValueError(f"policy {policy!r} has no knob to calibrate")
    with replay.workdir() as tmp:
        fitted = [replay.fit_split(table, emb, kind, spec.predictor_params, tr, te, Path(tmp) / f"f{i}",
                                   encoder=encoder) for i, (tr, te) in enumerate(splits)]
        base = replay.base_policy_config(spec, table, fitted[0].train_rows, costs)
        rows = np.concatenate([f.rows for f in fitted])
        strong = base.get("strong") or table.targets[int(np.argmax(table.quality[fitted[0].train_rows].mean(0)))]
        weak = base.get("weak")
        col = {t: j for j, t in enumerate(table.targets)}
        q_ev = table.quality[rows].mean(axis=0)
        c_ev = costs[rows].mean(axis=0)
        weak_id = weak or table.targets[int(np.argmin(c_ev))]
        weak_q, strong_q = float(q_ev[col[weak_id]]), float(q_ev[col[strong]])
        goal: dict[str, Any] = {"budget_per_1k": budget_per_1k, "quality_floor": quality_floor,
                                "min_pgr": min_pgr,
                                "share": share if share is not None else
                                ((strong, strong_share) if strong_share is not None else None)}
        if goal["share"] is not None and goal["share"][0] not in col:
            raise ValueError(f"--share: unknown target {goal['share'][0]!r}")
        values = sorted({_round(v) for v in grid})
        pts = _measure(spec, fitted, table, costs, values, progress)
        i, met, warning = choose(pts, goal, col, weak_q, strong_q)
        # refine between the chosen setting's neighbours: the grid is coarse where it matters most
        lo = pts.values[max(i - 1, 0)]
        hi = pts.values[min(i + 1, len(pts.values) - 1)]
        extra = sorted({_round(v) for v in np.linspace(lo, hi, 17)} - set(pts.values))
        if extra:
            pts = _merge(pts, _measure(spec, fitted, table, costs, extra, progress))
            i, met, warning = choose(pts, goal, col, weak_q, strong_q)
        value = pts.values[i]
        policy_cfg, _ = replay.with_knob(base, knob, value)
        if save_artifact:
            qcfg = _save_artifact(table, emb, spec, protocol, splits, save_artifact, encoder)
        elif kind == "prior":
            qcfg = fitted[0].quality_cfg if len(fitted) == 1 else _save_artifact(
                table, emb, spec, protocol, splits, None)
        else:
            qcfg = {"kind": kind, "artifact": artifact}
        text = snippet(policy_cfg, qcfg, knob, fitted[0].targets)
        check = _verify(text, fitted, table, costs, rows)
    if not np.isclose(check["quality"], pts.quality[i]) or not np.isclose(check["cost_per_1k"],
                                                                         pts.cost_per_1k[i]):
        raise RuntimeError("calibrate: the snippet's policy does not replay to the promised figures")
    shares = {t: float(check["shares"][j]) for j, t in enumerate(table.targets)}
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return {
        "policy": policy,
        "score": params.get("score") if policy == "quality-threshold" else None,
        "predictor": kind,
        "knob": knob,
        knob: value,
        "strong": strong,
        "weak": weak_id,
        "strong_share": shares[strong],
        "shares": shares,
        "quality": check["quality"],
        "pgr": float((check["quality"] - weak_q) / (strong_q - weak_q)) if strong_q != weak_q else None,
        "cost_per_1k_usd": check["cost_per_1k"],
        "rejected_share": check["rejected"],
        "weak_quality": weak_q,
        "strong_quality": strong_q,
        "goal": {k_: v for k_, v in goal.items() if v is not None},
        "goal_met": met,
        "warning": warning,
        "measured_on": (f"{len(rows)} rows, out-of-fold ({protocol.label()})" if protocol.kind == "cv"
                        else f"{len(rows)} held-out rows ({protocol.label()})"),
        "n": int(len(rows)),
        "sweep": {"values": pts.values, "quality": pts.quality.tolist(),
                  "cost_per_1k_usd": pts.cost_per_1k.tolist(), "rejected": pts.rejected.tolist()},
        "policy_config": policy_cfg,
        "quality_config": qcfg,
        "snippet": text,
    }


def _verify(text: str, fitted: Sequence[replay.Fitted], table: RouteTable, costs: np.ndarray,
            rows: np.ndarray) -> dict[str, Any]:
    """Replay the snippet's policy section as serving parses it (the promise is this replay)."""
    import yaml

    cfg = yaml.safe_load(text)["policy"]
    col = {t: j for j, t in enumerate(table.targets)}
    ids: list[str | None] = []
    for f in fitted:
        ids += replay.decide_all(cfg, None, f.requests, f.targets, f.quality)
    choice = np.array([[col[t] if t is not None else -1 for t in ids]])
    out = replay.outcomes(choice, rows, table.quality, costs, table.targets)
    return {"quality": float(out["quality"][0]), "cost_per_1k": float(1000 * out["cost"][0]),
            "rejected": float(out["rejected"][0]), "shares": out["shares"][0]}


def _save_artifact(table: RouteTable, emb: np.ndarray | None, spec: replay.RouterSpec, protocol: Any,
                   splits: Sequence[tuple[np.ndarray, np.ndarray]], path: str | None,
                   encoder: Any = None) -> dict[str, Any]:
    """The predictor the snippet names: the train side of a split (exactly the replayed one), or all
    rows of a CV table (the replay then measured its out-of-fold siblings)."""
    from policies.tuning.train import fit

    rows = splits[0][0] if protocol.kind != "cv" else np.arange(len(table))
    sub = table.subset(rows)
    x = np.zeros((len(sub), 1), np.float32) if spec.kind == "prior" or emb is None else emb[rows]
    pred = fit(sub, x, spec.kind, **spec.predictor_params)
    if spec.kind == "prior":
        return {"kind": "prior", "table": dict(pred.table)}
    assert path is not None
    qcfg = replay.quality_config(spec.kind, pred, Path(path))
    from policies.predictors.featurizers import ENCODERS, record

    if isinstance(encoder, str) and encoder in ENCODERS:
        from policies.tuning.embed import table_preambles

        # as `tune train` does: serving builds this featurizer and strips the same shared preambles
        record(path, encoder, preambles=table_preambles(list(sub.prompts), list(sub.dataset)))
    return qcfg


def cmd_calibrate(args: argparse.Namespace) -> int:
    from policies.tuning.checks import TableError
    from policies.tuning.cli import _emit, _json_arg, embeddings_for, load_protocol_table

    try:
        table, protocol = load_protocol_table(args)
        if protocol.kind == "holdout":
            raise ValueError("calibrate takes --data (K-fold) or --train/--test")
    except (TableError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if protocol.kind == "cv":
        protocol.k = args.cv
    share = None
    if args.share:
        t, _, f = args.share.rpartition("=")
        try:
            share = (t, float(f))
        except ValueError:
            print("error: --share takes TARGET=FRACTION", file=sys.stderr)
            return 2
    emb = None if args.kind == "prior" else embeddings_for(table, args.encoder)
    policy_params = _json_arg(args.policy_params, "--policy-params")
    if args.on_unsatisfiable:
        policy_params["on_unsatisfiable"] = args.on_unsatisfiable
    try:
        r = calibrate(table, emb, policy=args.policy, score=args.score, kind=args.kind,
                      artifact=args.artifact, protocol=protocol, seed=args.seed, encoder=args.encoder,
                      policy_params=policy_params,
                      predictor_params=_json_arg(args.predictor_params, "--predictor-params"),
                      save_artifact=args.save_artifact, progress=not args.quiet,
                      strong_share=args.strong_share, budget_per_1k=args.budget_per_1k,
                      min_pgr=args.min_pgr, quality_floor=args.quality_floor, share=share)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    knob = r["knob"]
    shares = ", ".join(f"{t} {100 * s:.1f}%" for t, s in r["shares"].items() if s > 0)
    text = (f"{knob} {r[knob]:g}: quality {r['quality']:.4f}, ${r['cost_per_1k_usd']:.4f} per 1k requests, "
            f"rejected {100 * r['rejected_share']:.1f}%; calls: {shares}\n"
            f"(replayed {r['policy']} with the {r['predictor']} predictor on {r['measured_on']}"
            + ("" if r["goal_met"] else f"; GOAL NOT MET: {r['warning']}") + ")\n\n"
            f"# cluster.yaml\n{r['snippet']}")
    _emit(args, r, text)
    return 0
