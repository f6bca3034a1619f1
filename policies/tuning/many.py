"""`tune eval` over more than two targets: every router's cost-quality curve beside the single targets,
a random router and the oracle, with the many-target figures (see `metrics.summarize_n`).

* single targets: each target for every evaluated row (points);
* `oracle`: the labels known, per prompt the target maximising quality - w x cost, ties to the
  cheaper; w = 0 is "the cheapest target that answers best", growing w traces its frontier down to
  all-cheapest;
* `random`: RouterBench's zero router: each prompt goes at random to one of two neighbouring targets
  on the single targets' upper hull, mixed in steps of 10%; its expected outcome, so it traces exactly
  what mixing fixed models reaches;
* routers (`replay.RouterSpec`, e.g. `cheapest-fit:knn`): the real policy and predictor, replayed over
  the policy's knob grid with predictors that never saw the evaluated rows' labels.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.tuning import metrics, replay
from policies.tuning.datasets import RouteTable
from policies.tuning.evaluate import Protocol, eval_mask_of, splits_of

MIX_STEPS = 10


def default_specs() -> list[replay.RouterSpec]:
    """Every registered policy with a knob (quality-threshold aside: it routes between two targets)
    over every registered predictor kind."""
    import policies.config  # noqa: F401
    from policies.registry import registered
    from policies.tuning.train import kinds

    out = []
    for name in sorted(registered()):
        if name == "quality-threshold" or replay.sweep_of(name)[0] is None:
            continue
        out += [replay.RouterSpec(name, k) for k in kinds()]
    return out


def _point_rows(name: str, cost: np.ndarray, quality: np.ndarray, tq: np.ndarray, tc: np.ndarray,
                extra: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, **metrics.summarize_n(cost, quality, tq, tc)}
    row.update(extra)
    return row


def oracle_row(q: np.ndarray, c: np.ndarray, tq: np.ndarray, tc: np.ndarray,
               targets: Sequence[str]) -> dict[str, Any]:
    ws = metrics.oracle_weights(q, c)
    ch = np.stack([metrics.oracle_choices(q, c, w) for w in ws])
    out = replay.outcomes(ch, np.arange(len(q)), q, c, targets)
    return _point_rows("oracle", out["cost"], out["quality"], tq, tc, {
        "knob": "cost_weight",
        "curve": _curve(ws.tolist(), out, targets)})


def random_row(q: np.ndarray, c: np.ndarray, tq: np.ndarray, tc: np.ndarray, targets: Sequence[str],
               seed: int = 0) -> dict[str, Any]:
    hx, _ = metrics.upper_hull(tc, tq)
    # hull vertices as target indices, cheapest first (ties: the better one, which the hull keeps)
    verts = []
    for x in hx:
        cand = np.flatnonzero(np.isclose(tc, x, rtol=1e-12, atol=0))
        verts.append(int(cand[np.argmax(tq[cand])]))
    # The expected outcome of the random mix (not one seeded draw): on a few hundred rows a lucky draw
    # would "beat" the best single target, which says nothing about routing.
    verts = verts[:int(np.argmax([tq[v] for v in verts])) + 1]  # mixing past the best only loses
    labels, qual, cost, shares = [], [], [], []
    if len(verts) == 1:
        verts = verts * 2
    for k in range(len(verts) - 1):
        a, b = verts[k], verts[k + 1]
        for step in range(MIX_STEPS + (k == len(verts) - 2)):
            p = step / MIX_STEPS
            labels.append(k + p)
            qual.append((1 - p) * tq[a] + p * tq[b])
            cost.append((1 - p) * tc[a] + p * tc[b])
            sh = np.zeros(len(targets))
            sh[a] += 1 - p
            sh[b] += p
            shares.append(sh)
    out = {"quality": np.array(qual), "cost": np.array(cost), "rejected": np.zeros(len(qual)),
           "shares": np.array(shares)}
    return _point_rows("random", out["cost"], out["quality"], tq, tc, {
        "knob": "hull_position", "curve": _curve(labels, out, targets)})


def _curve(values: Sequence[Any], out: dict[str, np.ndarray], targets: Sequence[str]) -> dict[str, Any]:
    return {"knob": [None if v is None else float(v) for v in values],
            "quality": out["quality"].tolist(), "cost_usd": out["cost"].tolist(),
            "rejected": out["rejected"].tolist(),
            "shares": {t: out["shares"][:, j].tolist() for j, t in enumerate(targets)}}


def evaluate_many(table: RouteTable, protocol: Protocol, specs: Sequence[replay.RouterSpec],
                  emb: np.ndarray | None = None, seed: int = 0,
                  prices: dict[str, tuple[float, float]] | None = None, progress: bool = True,
                  encoder: Any = None) -> dict[str, Any]:
    """The report dict of `tune eval` on any number of targets (`--json` prints it)."""
    from tqdm import tqdm

    mask = eval_mask_of(table, protocol)
    splits = splits_of(table, protocol, seed)
    costs = table.costs(prices)
    ev = np.flatnonzero(mask)
    q, c = table.quality[ev], costs[ev]
    tq, tc = q.mean(axis=0), c.mean(axis=0)
    targets = table.targets
    b, ch = metrics.best_target(tq, tc), metrics.cheapest_target(tq, tc)
    rows = [oracle_row(q, c, tq, tc, targets), random_row(q, c, tq, tc, targets, seed)]
    by_kind: dict[tuple[str, str], list[replay.RouterSpec]] = {}
    for s in specs:
        by_kind.setdefault((s.kind, repr(sorted(s.predictor_params.items()))), []).append(s)
    need = [k for k, _ in by_kind if k != "prior"]
    if need and emb is None:
        raise ValueError(f"predictors {sorted(set(need))} need embeddings")
    jobs = [(key, i) for key in by_kind for i in range(len(splits))]
    bar = tqdm(jobs, desc=f"training ({protocol.label()})", file=sys.stderr, disable=not progress)
    fitted: dict[tuple[str, str], list[replay.Fitted]] = {key: [] for key in by_kind}
    with replay.workdir() as tmp:
        for key, i in bar:
            bar.set_postfix_str(key[0])
            tr, te = splits[i]
            spec = by_kind[key][0]
            fitted[key].append(replay.fit_split(
                table, emb, spec.kind, spec.predictor_params, tr, te,
                Path(tmp) / f"{spec.kind}-{len(fitted[key])}-{i}", prices, encoder))
        bar.close()
        for key, group in by_kind.items():
            for spec in group:
                r = replay.replay(spec, fitted[key], table, costs, progress=progress)
                order = np.argsort(r["rows"])  # back to table order
                choice = r["choice"][:, order]
                out = replay.outcomes(choice, np.sort(r["rows"]), table.quality, costs, targets)
                rows.append(_point_rows(spec.name, out["cost"], out["quality"], tq, tc, {
                    "knob": r["knob"], "policy_config": r["base_config"],
                    "predictor": spec.kind, "predictor_params": spec.predictor_params,
                    "curve": _curve(r["values"], out, targets)}))
    ref = splits[0][0] if protocol.kind != "cv" else np.arange(len(table))
    return {
        "dataset": sorted({str(d) for d in table.dataset[ev]}),
        "protocol": protocol.label(),
        "n": int(len(ev)),
        "n_train": int(len(splits[0][0])),
        "targets": [{"id": t, "quality": float(tq[j]), "cost_usd": float(tc[j]),
                     "cost_per_1k_usd": float(1000 * tc[j]),
                     "arena": metrics.arena_score(tq[j], 1000 * tc[j])[0],
                     "train_quality": float(table.quality[ref, j].mean())}
                    for j, t in enumerate(targets)],
        "best_target": targets[b],
        "cheapest_target": targets[ch],
        "cost_range_usd": [float(tc.min()), float(tc.max())],
        "notes": _notes(tq, tc, targets, b, ch, rows),
        "policies": rows,
    }


def _notes(tq: np.ndarray, tc: np.ndarray, targets: Sequence[str], b: int, ch: int,
           rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    if b == ch:
        notes.append(f"the best single target {targets[b]} is also the cheapest: no router can beat it on "
                     "cost, only match it")
    clamped = [r["name"] for r in rows if r.get("arena_clamped")]
    if clamped:
        notes.append("RouterArena cost score clamped to [0, 1] for " + ", ".join(clamped))
    return notes
