"""Pure parts of the real-engine SLO run (`benchmarks/slo_live.py`): load schedule, SLO judging, summaries.

No Ray, no HTTP: importable by the unit tests. One record per request sent (a dict):
    cls          constraint class name ("e2e_1500", "min_quality", "unconstrained")
    t_s          scheduled send time in the cell (s);  lag_ms: how late the sender actually sent it
    status       HTTP status (0 = no response: timeout or connection error)
    latency_ms   client-measured end-to-end time (send -> full JSON body read)
    target       x-router-target ("none" on errors);  reason: x-router-reason
    cost_usd     x-router-cost-usd (0 when absent);  completion_tokens: usage.completion_tokens
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConstraintClass:
    """One slice of the request mix: its share, the `routing` body it sends, and how it is judged."""

    name: str
    weight: float
    routing: dict[str, Any] = field(default_factory=dict)

    @property
    def max_e2e_ms(self) -> float | None:
        r = self.routing
        if r.get("max_latency_ms") is not None and r.get("latency_metric", "e2e") == "e2e":
            return float(r["max_latency_ms"])
        return None

    @property
    def min_quality(self) -> float | None:
        v = self.routing.get("min_quality")
        return None if v is None else float(v)


# Issue 7's mix: 50% with a 1.5 s end-to-end bound, 30% with min_quality, 20% unconstrained.
MIX: tuple[ConstraintClass, ...] = (
    ConstraintClass("e2e_1500", 0.5, {"max_latency_ms": 1500, "latency_metric": "e2e"}),
    ConstraintClass("min_quality", 0.3, {"min_quality": 0.8}),
    ConstraintClass("unconstrained", 0.2, {}),
)

# Short questions whose answers run past a small max_tokens, so service time is about max_tokens.
PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Explain why the sky is blue.",
    "Name three primary colours.",
    "What is 12 + 7?",
    "Describe a cat in one sentence.",
    "Why do leaves change colour in autumn?",
    "What does a CPU do?",
    "Give a synonym for happy.",
    "How many days are in a leap year?",
    "What is photosynthesis?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Translate 'good morning' into Spanish.",
    "List two uses of copper.",
    "What causes rain?",
    "Summarise the plot of Cinderella.",
    "What is a prime number?",
    "Why is exercise healthy?",
    "What is the largest planet in our solar system?",
    "How does a bicycle stay upright?",
)


def schedule(rate: float, seconds: float, seed: int, mix: tuple[ConstraintClass, ...] = MIX,
             prompts: tuple[str, ...] = PROMPTS) -> list[tuple[float, ConstraintClass, str]]:
    """Open-loop Poisson arrivals in [0, seconds): (send time, class, prompt). Same seed = same load."""
    rng = random.Random(seed)
    weights = [c.weight for c in mix]
    out: list[tuple[float, ConstraintClass, str]] = []
    t = rng.expovariate(rate)
    while t < seconds:
        cls = rng.choices(mix, weights)[0]
        out.append((t, cls, rng.choice(prompts)))
        t += rng.expovariate(rate)
    return out


def slo_met(rec: dict[str, Any], cls: ConstraintClass, quality_prior: dict[str, float]) -> bool:
    """Answered (2xx) and within the class's bounds.

    - e2e bound: client-measured end-to-end latency <= the bound.
    - min_quality: answered by a target whose configured quality prior >= min_quality (the router's own
      quality predictor here is the prior table, so this is what the policy was asked to respect).
    - unconstrained: answered at all.
    """
    if not 200 <= int(rec.get("status", 0)) < 300:
        return False
    if cls.max_e2e_ms is not None and rec["latency_ms"] > cls.max_e2e_ms:
        return False
    if cls.min_quality is not None and quality_prior.get(rec.get("target", ""), 0.0) < cls.min_quality:
        return False
    return True


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for an empty list."""
    s = sorted(xs)
    if not s:
        return math.nan
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _r(x: float, nd: int = 1) -> float | None:
    return None if x is None or math.isnan(x) else round(x, nd)


def summarize(records: list[dict[str, Any]], mix: tuple[ConstraintClass, ...], quality_prior: dict[str, float],
              api_targets: set[str], seconds: float) -> dict[str, Any]:
    """One cell (policy x rate): attainment, latency percentiles of answered requests, cost, fallback."""
    by_name = {c.name: c for c in mix}
    n = len(records)
    ok = [r for r in records if 200 <= int(r.get("status", 0)) < 300]
    lat = [r["latency_ms"] for r in ok]
    met = [slo_met(r, by_name[r["cls"]], quality_prior) for r in records]
    per_class: dict[str, Any] = {}
    for c in mix:
        rows = [(r, m) for r, m in zip(records, met, strict=True) if r["cls"] == c.name]
        cl = [r["latency_ms"] for r, _ in rows if 200 <= int(r.get("status", 0)) < 300]
        per_class[c.name] = {
            "n": len(rows),
            "slo_attainment": _r(sum(m for _, m in rows) / len(rows), 4) if rows else None,
            "p50_ms": _r(pct(cl, 0.5)), "p95_ms": _r(pct(cl, 0.95)),
            "fallback_share": _r(sum(r.get("target") in api_targets for r, _ in rows) / len(rows), 4)
            if rows else None,
        }
    targets: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for r in records:
        targets[r.get("target") or "none"] = targets.get(r.get("target") or "none", 0) + 1
        statuses[str(r.get("status", 0))] = statuses.get(str(r.get("status", 0)), 0) + 1
    target_p50 = {t: _r(pct([r["latency_ms"] for r in ok if r.get("target") == t], 0.5))
                  for t in sorted({r.get("target") for r in ok})}
    return {
        "n": n,
        "answered": len(ok),
        "error_share": _r((n - len(ok)) / n, 4) if n else None,
        "slo_attainment": _r(sum(met) / n, 4) if n else None,
        "p50_ms": _r(pct(lat, 0.5)), "p95_ms": _r(pct(lat, 0.95)), "p99_ms": _r(pct(lat, 0.99)),
        "cost_per_1k_usd": _r(sum(r.get("cost_usd", 0.0) for r in records) / n * 1000, 6) if n else None,
        "fallback_share": _r(sum(r.get("target") in api_targets for r in records) / n, 4) if n else None,
        "goodput_rps": _r(len(ok) / seconds, 3) if seconds else None,
        "max_lag_ms": _r(max((r.get("lag_ms", 0.0) for r in records), default=0.0)),
        "per_class": per_class,
        "targets": dict(sorted(targets.items())),
        "target_p50_ms": target_p50,
        "statuses": statuses,
    }


def _fmt(x: Any, pct_: bool = False, nd: int = 0) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct_ else f"{x:,.{nd}f}"


def markdown(by_rate: dict[str, dict[str, dict[str, Any]]], rates: list[float]) -> str:
    """Table: one row per policy x rate."""
    head = ("| policy | req/s | SLO met | e2e<=1.5s / min_q / unconstr. | p50 / p95 / p99 ms | $/1k req "
            "| fallback | targets (smollm2/gemma3/api/none) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for policy, cells in by_rate.items():
        for rate in rates:
            s = cells.get(f"{rate:g}")
            if s is None:
                continue
            pc = s["per_class"]
            classes = " / ".join(_fmt((pc.get(k) or {}).get("slo_attainment"), True)
                                 for k in ("e2e_1500", "min_quality", "unconstrained"))
            t = s["targets"]
            api = sum(v for k, v in t.items() if k not in ("smollm2-135m", "gemma3-270m", "none"))
            mix = f"{t.get('smollm2-135m', 0)}/{t.get('gemma3-270m', 0)}/{api}/{t.get('none', 0)}"
            lines.append(
                f"| {policy} | {rate:g} | {_fmt(s['slo_attainment'], True)} | {classes} | "
                f"{_fmt(s['p50_ms'])} / {_fmt(s['p95_ms'])} / {_fmt(s['p99_ms'])} | "
                f"{_fmt(s['cost_per_1k_usd'], nd=4)} | {_fmt(s['fallback_share'], True)} | {mix} |"
            )
    return "\n".join(lines)


def plot(by_rate: dict[str, dict[str, dict[str, Any]]], rates: list[float], path: Any, title: str) -> str | None:
    """SLO attainment vs offered rate per policy as a PNG; returns a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for policy, cells in by_rate.items():
        xs = [r for r in rates if f"{r:g}" in cells]
        ys = [100 * (cells[f"{r:g}"]["slo_attainment"] or 0) for r in xs]
        ax.plot(xs, ys, marker="o", label=policy)
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.set_xlabel("offered load (req/s, Poisson)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
