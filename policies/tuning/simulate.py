"""`tune simulate`: a discrete-event simulation of a cluster that runs the REAL policy objects.

Model. Each target has `replicas x max_concurrency` slots fed by one FIFO queue (Ray Serve spreads a
target's requests over its replicas; pooling them is the usual M/G/c approximation). A request's service
is prefill (`ttft_ms + per_prompt_token_ms x prompt tokens`) then decode (`tpot_ms` per output token),
each with lognormal noise; its TTFT includes the wait for a slot. Service parameters come from the
scenario or are fitted from collected latencies (`fit_service`, from a `tune collect` table).

Policies are built with `policies.config.build_policy` and decide through a `StaticView` whose latency
view is the engine's own `LatencyEstimator`, fed by the simulation exactly as the router feeds it
(started / observe / finished). Quality is a per-request P(acceptable) per target from a difficulty
model; the policy sees it through a predictor with noise, and the report counts the true value.
Arrivals: Poisson, or bursty (an on/off modulated Poisson with the same mean rate).
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policies.base import StaticView
from policies.types import Constraints, LatencyPrior, RouteRequest, Target


@dataclass
class Service:
    """Service-time model of one target (per request, on one slot)."""

    ttft_ms: float = 100.0
    per_prompt_token_ms: float = 0.1
    tpot_ms: float = 20.0
    cv: float = 0.3  # lognormal spread of each part


@dataclass
class SimTarget:
    target: Target
    service: Service
    skill: float  # quality model: P(ok) = sigmoid(skill - 4 x difficulty)


@dataclass
class Scenario:
    targets: list[SimTarget]
    rate: float = 1200.0  # requests per second
    requests: int = 20000
    mix: list[tuple[float, Constraints]] = field(default_factory=list)
    prompt_tokens_mean: float = 300.0
    output_tokens_mean: float = 100.0
    predictor_noise: float = 0.05
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_scenario() -> Scenario:
    """Three targets, 120 replicas, 1,200 req/s: two local models and one provider; half the traffic
    has an interactive TTFT bound, a third a quality floor with a loose e2e bound."""

    def tgt(id_, kind, pin, pout, prior, lat, replicas, conc):
        return Target(id=id_, kind=kind, input_price_per_mtok=pin, output_price_per_mtok=pout,
                      quality_prior=prior, latency=LatencyPrior(ttft_ms=lat[0], tpot_ms=lat[1],
                                                                max_concurrency=conc),
                      replicas=replicas, context_window=8192)

    targets = [
        SimTarget(tgt("small", "local", 0.05, 0.1, 0.6, (60, 8), 60, 16), Service(60, 0.05, 8, 0.3), 2.0),
        SimTarget(tgt("medium", "local", 0.3, 0.6, 0.75, (120, 18), 40, 16), Service(120, 0.1, 18, 0.3),
                  3.0),
        SimTarget(tgt("strong-api", "api", 2.5, 10.0, 0.9, (400, 15), 20, 32), Service(400, 0.05, 15, 0.4),
                  4.5),
    ]
    mix = [
        (0.5, Constraints(max_latency_ms=800, latency_metric="ttft")),
        (0.3, Constraints(min_quality=0.8, max_latency_ms=6000, latency_metric="e2e")),
        (0.2, Constraints()),
    ]
    policies: dict[str, dict[str, Any]] = {
        "cheapest-fit": {"name": "cheapest-fit", "on_unsatisfiable": "best_effort"},
        "quality-threshold": {"name": "quality-threshold", "strong": "strong-api", "weak": "small",
                              "threshold": 0.6},
        "always-strongest": {"name": "always-strongest"},
    }
    return Scenario(targets=targets, mix=mix, policies=policies)


def fit_service(ttft_ms: np.ndarray, e2e_ms: np.ndarray, prompt_tokens: np.ndarray,
                output_tokens: np.ndarray) -> Service:
    """Least-squares prefill line (TTFT vs prompt tokens) and median decode time per token, from the
    latencies `tune collect` measured on one target at low load."""
    x = np.asarray(prompt_tokens, float)
    y = np.asarray(ttft_ms, float)
    if len(y) >= 3 and np.ptp(x) > 0:
        slope, icpt = np.polyfit(x, y, 1)
        slope, icpt = max(float(slope), 0.0), max(float(icpt), 1.0)
    else:
        slope, icpt = 0.0, float(np.median(y))
    out = np.maximum(np.asarray(output_tokens, float) - 1, 1)
    tpot = (np.asarray(e2e_ms, float) - y) / out
    resid = y - (icpt + slope * x)
    cv = float(np.clip(np.std(resid) / max(np.mean(y), 1e-9), 0.05, 2.0))
    return Service(ttft_ms=icpt, per_prompt_token_ms=slope, tpot_ms=max(float(np.median(tpot)), 0.01), cv=cv)


class _TableQuality:
    """The policies' quality predictor: the request's true P(ok) plus noise (prompt = request id)."""

    def __init__(self, predicted: np.ndarray, ids: list[str]) -> None:
        self.predicted, self.col = predicted, {t: j for j, t in enumerate(ids)}

    def predict(self, prompt: str, targets) -> dict[str, float]:
        row = self.predicted[int(prompt)]
        return {t.id: float(row[self.col[t.id]]) if t.id in self.col else t.quality_prior for t in targets}


def _lognormal(rng: np.random.Generator, mean: np.ndarray | float, cv: float, size: int) -> np.ndarray:
    s2 = math.log(1.0 + cv * cv)
    return np.asarray(mean) * np.exp(rng.normal(-s2 / 2, math.sqrt(s2), size))


def arrivals(n: int, rate: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in ms. bursty: 2 s on / 8 s off cycles; the on phase carries 4x the mean rate,
    the off phase the rest, so the long-run rate is `rate`."""
    if kind == "poisson":
        return np.cumsum(rng.exponential(1000.0 / rate, n))
    hi, lo = 4.0 * rate, rate * (10 - 2 * 4.0) / 8
    t, out = 0.0, np.empty(n)
    for i in range(n):
        phase = (t % 10000.0) < 2000.0
        t += rng.exponential(1000.0 / (hi if phase else lo))
        out[i] = t
    return out


def simulate(sc: Scenario, policy_cfg: dict[str, Any], arrival_kind: str = "poisson",
             seed: int = 0) -> dict[str, Any]:
    """Run one policy over the scenario; return its SLO attainment, cost, quality and load."""
    from policies.config import build_latency, build_policy, parse_policy

    rng = np.random.default_rng(seed)
    n = sc.requests
    ids = [s.target.id for s in sc.targets]
    targets = [s.target for s in sc.targets]
    skill = np.array([s.skill for s in sc.targets])
    difficulty = rng.random(n)
    true_q = 1.0 / (1.0 + np.exp(-(skill[None, :] - 4.0 * difficulty[:, None])))
    pred_q = np.clip(true_q + rng.normal(0, sc.predictor_noise, true_q.shape), 0.0, 1.0)
    p_tok = np.maximum(1, _lognormal(rng, sc.prompt_tokens_mean, 0.8, n)).astype(int)
    o_tok = np.maximum(1, _lognormal(rng, sc.output_tokens_mean, 0.8, n)).astype(int)
    probs = np.array([w for w, _ in sc.mix])
    kinds = rng.choice(len(sc.mix), n, p=probs / probs.sum())
    arr = arrivals(n, sc.rate, arrival_kind, rng)
    est = build_latency(None, targets)
    view = StaticView(targets, est, _TableQuality(pred_q, ids))
    policy = build_policy(parse_policy(policy_cfg))
    slots = {s.target.id: s.target.replicas * s.target.latency.max_concurrency for s in sc.targets}
    svc = {s.target.id: s.service for s in sc.targets}
    busy = dict.fromkeys(ids, 0)
    queue: dict[str, deque] = {t: deque() for t in ids}
    by_id = {t.id: t for t in targets}
    noise = rng.standard_normal((n, 2))
    ttft = np.full(n, np.nan)
    e2e = np.full(n, np.nan)
    chosen = np.full(n, -1)
    outcome = np.full(n, "", dtype=object)
    events: list[tuple[float, int, int]] = []  # (time, kind 0=done/1=arrival, request)

    def start(i: int, tid: str, now: float) -> None:
        s = svc[tid]
        s2 = math.log(1.0 + s.cv * s.cv)
        f = np.exp(-s2 / 2 + math.sqrt(s2) * noise[i])
        prefill = (s.ttft_ms + s.per_prompt_token_ms * p_tok[i]) * f[0]
        decode = max(o_tok[i] - 1, 0) * s.tpot_ms * f[1]
        busy[tid] += 1
        ttft[i] = now + prefill - arr[i]
        heapq.heappush(events, (now + prefill + decode, 0, i))

    for i in range(n):
        heapq.heappush(events, (arr[i], 1, i))
    tickets: dict[int, int] = {}
    t0 = time.perf_counter()
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 1:
            req = RouteRequest(prompt=str(i), prompt_tokens=int(p_tok[i]),
                               expected_output_tokens=int(sc.output_tokens_mean),
                               constraints=sc.mix[kinds[i]][1])
            d = policy.decide(req, view)
            outcome[i] = d.outcome
            if d.target is None:
                continue
            j = ids.index(d.target)
            chosen[i] = j
            tickets[i] = est.started(d.target)
            if busy[d.target] < slots[d.target]:
                start(i, d.target, now)
            else:
                queue[d.target].append(i)
        else:
            tid = ids[chosen[i]]
            e2e[i] = now - arr[i]
            n_out = max(int(o_tok[i]), 1)
            est.observe(tid, float(ttft[i]), (e2e[i] - ttft[i]) / max(n_out - 1, 1), n_out, ticket=tickets.pop(i))
            est.finished(tid)
            busy[tid] -= 1
            if queue[tid]:
                start(queue[tid].popleft(), tid, now)
    wall = time.perf_counter() - t0
    idle = _unloaded(sc, noise, p_tok, o_tok)
    out = _summary(sc, ids, by_id, chosen, kinds, ttft, e2e, true_q, p_tok, o_tok, arr, wall)
    out["classes"] = _classes(sc, ids, chosen, kinds, outcome, ttft, e2e, idle, true_q)
    return out


def _unloaded(sc: Scenario, noise: np.ndarray, p_tok: np.ndarray, o_tok: np.ndarray) -> dict[str, np.ndarray]:
    """Per request and target (n x targets), the TTFT and e2e it would see on an idle cluster with its
    own service-time draws (the ones `start` uses): what an oracle knowing the output length expects."""
    ttft = np.empty((len(p_tok), len(sc.targets)))
    e2e = np.empty_like(ttft)
    for j, s in enumerate(sc.targets):
        v = s.service
        s2 = math.log(1.0 + v.cv * v.cv)
        f = np.exp(-s2 / 2 + math.sqrt(s2) * noise)
        ttft[:, j] = (v.ttft_ms + v.per_prompt_token_ms * p_tok) * f[:, 0]
        e2e[:, j] = ttft[:, j] + np.maximum(o_tok - 1, 0) * v.tpot_ms * f[:, 1]
    return {"ttft": ttft, "e2e": e2e}


def _feasible(c: Constraints, lat: np.ndarray, true_q: np.ndarray) -> np.ndarray:
    """Requests (rows of `lat`, n x targets) whose latency bound some target meets on an idle cluster.
    With a quality floor, only targets whose true P(ok) meets it count (all of them when none does):
    the ceiling of SLO attainment for a policy that honours the floor."""
    ok = lat <= c.max_latency_ms
    if c.min_quality is not None:
        good = true_q >= c.min_quality
        good[~good.any(axis=1)] = True
        ok &= good
    return np.asarray(ok.any(axis=1))


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.percentile(x, q)) if len(x) else None


def _classes(sc, ids, chosen, kinds, outcome, ttft, e2e, idle, true_q) -> list[dict[str, Any]]:
    """Per constraint class of the mix: attainment, the idle-cluster oracle ceiling (`feasible`),
    target shares, decision outcomes, latency percentiles; to see which class misses and why."""
    out = []
    routed = chosen >= 0
    for k, (w, c) in enumerate(sc.mix):
        m = kinds == k
        cnt = int(m.sum())
        row: dict[str, Any] = {"class": k, "weight": w, "constraints": c.model_dump(exclude_none=True),
                               "requests": cnt}
        if c.max_latency_ms is not None and cnt:
            metric = c.latency_metric
            lat = np.nan_to_num((ttft if metric == "ttft" else e2e)[m], nan=np.inf)
            ok = routed[m] & (lat <= c.max_latency_ms)
            feas = _feasible(c, idle[metric][m], true_q[m])
            row.update(slo_attainment=float(ok.mean()), feasible=float(feas.mean()),
                       attainment_of_feasible=float(ok[feas].mean()) if feas.any() else None)
        else:
            row.update(slo_attainment=None, feasible=None, attainment_of_feasible=None)
        row["load"] = {tid: float((chosen[m] == j).mean()) if cnt else 0.0 for j, tid in enumerate(ids)}
        outs, counts = np.unique(outcome[m].astype(str), return_counts=True)
        row["outcomes"] = {str(o): float(n_ / max(cnt, 1)) for o, n_ in zip(outs, counts, strict=True) if o}
        for name, arr_ in (("ttft", ttft[m]), ("e2e", e2e[m])):
            row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = _pct(arr_, 50), _pct(arr_, 99)
        out.append(row)
    return out


def _summary(sc, ids, by_id, chosen, kinds, ttft, e2e, true_q, p_tok, o_tok, arr, wall) -> dict[str, Any]:
    n = len(chosen)
    routed = chosen >= 0
    met = np.zeros(n, dtype=bool)
    bounded = np.zeros(n, dtype=bool)
    for k, (_, c) in enumerate(sc.mix):
        m = kinds == k
        if c.max_latency_ms is None:
            continue
        bounded |= m
        lat = ttft if c.latency_metric == "ttft" else e2e
        met |= m & routed & (np.nan_to_num(lat, nan=np.inf) <= c.max_latency_ms)
    cost = np.zeros(n)
    qual = np.zeros(n)
    for j, tid in enumerate(ids):
        m = chosen == j
        t = by_id[tid]
        cost[m] = (p_tok[m] * t.input_price_per_mtok + o_tok[m] * t.output_price_per_mtok) / 1e6
        qual[m] = true_q[m, j]
    span_s = (arr[-1] - arr[0]) / 1000 if n > 1 else 1.0
    return {
        "requests": n,
        "offered_rps": n / span_s,
        "replicas": sum(by_id[t].replicas for t in ids),
        "slo_attainment": float(met[bounded].mean()) if bounded.any() else float("nan"),
        "rejected": float((~routed).mean()),
        "cost_per_1k_usd": float(1000 * cost.sum() / n),
        "quality": float(qual[routed].mean()) if routed.any() else 0.0,
        "ttft_p50_ms": float(np.nanpercentile(ttft, 50)),
        "ttft_p99_ms": float(np.nanpercentile(ttft, 99)),
        "e2e_p99_ms": float(np.nanpercentile(e2e, 99)),
        "load": {tid: float((chosen == j).mean()) for j, tid in enumerate(ids)},
        "wall_s": wall,
    }


def compare(sc: Scenario, names: list[str], arrival_kind: str = "poisson", seed: int = 0) -> dict:
    rows = []
    for name in names:
        cfg = sc.policies.get(name, {"name": name})
        rows.append({"policy": name, **simulate(sc, cfg, arrival_kind, seed)})
    return {"rate": sc.rate, "arrivals": arrival_kind, "policies": rows}


def markdown(report: dict) -> str:
    ids = list(report["policies"][0]["load"]) if report["policies"] else []
    head = ("| policy | SLO met | rejected | quality | $/1k req | TTFT p50 | TTFT p99 | e2e p99 | "
            + " | ".join(f"load {t}" for t in ids) + " | wall s |")
    lines = [f"{report['policies'][0]['requests']} requests at {report['rate']:.0f} req/s "
             f"({report['arrivals']}), {report['policies'][0]['replicas']} replicas", "", head,
             "|" + "---|" * (9 + len(ids))]
    for r in report["policies"]:
        lines.append(
            f"| {r['policy']} | {100 * r['slo_attainment']:.1f}% | {100 * r['rejected']:.1f}% | "
            f"{r['quality']:.3f} | {r['cost_per_1k_usd']:.3f} | {r['ttft_p50_ms']:.0f} ms | "
            f"{r['ttft_p99_ms']:.0f} ms | {r['e2e_p99_ms']:.0f} ms | "
            + " | ".join(f"{100 * r['load'][t]:.0f}%" for t in ids) + f" | {r['wall_s']:.1f} |")
    if any(r.get("classes") for r in report["policies"]):
        lines += ["", class_markdown(report)]
    return "\n".join(lines) + "\n"


def _class_label(c: dict[str, Any]) -> str:
    parts = []
    if "max_latency_ms" in c:
        parts.append(f"{c.get('latency_metric', 'e2e')}<={c['max_latency_ms']:.0f}ms")
    if "min_quality" in c:
        parts.append(f"q>={c['min_quality']}")
    if "max_cost_usd" in c:
        parts.append(f"cost<={c['max_cost_usd']}")
    return " ".join(parts) or "unconstrained"


def class_markdown(report: dict) -> str:
    """Per policy and constraint class: SLO met, the idle-cluster oracle ceiling ('feasible'), SLO met
    among the feasible requests, target shares, non-route outcomes, TTFT and e2e p50/p99."""
    ids = list(report["policies"][0]["load"])
    f = lambda x, pct=True: "-" if x is None else (f"{100 * x:.1f}%" if pct else f"{x:.0f}")  # noqa: E731
    lines = ["| policy | class | share | SLO met | feasible | met of feasible | "
             + " | ".join(f"load {t}" for t in ids) + " | not routed as fitting | TTFT p50/p99 ms | e2e p50/p99 ms |",
             "|" + "---|" * (9 + len(ids))]
    for r in report["policies"]:
        for c in r.get("classes", []):
            other = {k: v for k, v in c["outcomes"].items() if k != "route"}
            lines.append(
                f"| {r['policy']} | {_class_label(c['constraints'])} | {c['weight']:.0%} | {f(c['slo_attainment'])} | "
                f"{f(c['feasible'])} | {f(c['attainment_of_feasible'])} | "
                + " | ".join(f"{100 * c['load'][t]:.0f}%" for t in ids) + " | "
                + (", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(other.items())) or "-") + " | "
                f"{f(c['ttft_p50_ms'], False)}/{f(c['ttft_p99_ms'], False)} | "
                f"{f(c['e2e_p50_ms'], False)}/{f(c['e2e_p99_ms'], False)} |")
    return "\n".join(lines)


def load_scenario(path: str) -> Scenario:
    """A scenario file (YAML/JSON): targets [{target: {...Target}, service: {...}, skill}], rate,
    requests, mix [{weight, constraints: {...}}], policies {name: {...policy config}}."""
    import yaml

    with open(path) as f:
        raw = yaml.safe_load(f)
    base = default_scenario()
    targets = [SimTarget(Target(**t["target"]), Service(**t.get("service", {})), float(t.get("skill", 2.0)))
               for t in raw.get("targets", [])] or base.targets
    mix = [(float(m["weight"]), Constraints(**m.get("constraints", {}))) for m in raw.get("mix", [])]
    return Scenario(targets=targets, rate=float(raw.get("rate", base.rate)),
                    requests=int(raw.get("requests", base.requests)), mix=mix or base.mix,
                    policies=raw.get("policies", base.policies))


def fit_from_table(sc: Scenario, table: Any) -> list[str]:
    """Replace the service model of every scenario target the collected table measured."""
    from policies.tuning.datasets import estimate_tokens

    if table.ttft_ms is None or table.e2e_ms is None or table.tokens_out is None:
        raise ValueError("the table has no TTFT / e2e / output tokens (collect with `tune collect`)")
    tin = table.tokens_in if table.tokens_in is not None else np.array(
        [estimate_tokens(p) for p in table.prompts], dtype=float)
    fitted = []
    for s in sc.targets:
        if s.target.id in table.targets:
            j = table.col(s.target.id)
            s.service = fit_service(table.ttft_ms[:, j], table.e2e_ms[:, j], tin, table.tokens_out[:, j])
            fitted.append(s.target.id)
    return fitted


def cmd_simulate(args: argparse.Namespace) -> int:
    from policies.tuning.cli import _emit

    sc = load_scenario(args.config) if args.config else default_scenario()
    if args.fit_from:
        from policies.tuning.datasets import load_file

        fitted = fit_from_table(sc, load_file(args.fit_from))
        if not fitted:
            raise SystemExit(f"{args.fit_from} measured none of the scenario's targets "
                             f"{[s.target.id for s in sc.targets]}")
    sc.requests = args.requests
    if args.replicas_scale != 1.0:
        for s in sc.targets:
            s.target = s.target.model_copy(update={"replicas": max(1, round(s.target.replicas
                                                                            * args.replicas_scale))})
    rates = [float(r) for r in str(args.rate).split(",") if r] if args.rate else [sc.rate]
    runs = []
    for rate in rates:
        sc.rate = rate
        runs.append(compare(sc, [p for p in args.policies.split(",") if p], args.arrivals, args.seed))
    _emit(args, {"runs": runs}, "\n".join(markdown(r) for r in runs))
    return 0
