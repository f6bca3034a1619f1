"""Markdown and PNG for the many-target `tune eval` report (`many.evaluate_many`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pct(x: float | None) -> str:
    return "never" if x is None else f"{100 * x:.1f}%"


def _q(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def markdown(report: dict[str, Any]) -> str:
    best = next(t for t in report["targets"] if t["id"] == report["best_target"])
    cheap = next(t for t in report["targets"] if t["id"] == report["cheapest_target"])
    lines = [
        f"## {', '.join(report['dataset'])} ({report['protocol']}, n={report['n']}, "
        f"{len(report['targets'])} targets)",
        "",
        f"best single target `{best['id']}`: quality {best['quality']:.4f} at "
        f"${best['cost_per_1k_usd']:.4f} per 1k; cheapest `{cheap['id']}`: quality {cheap['quality']:.4f} at "
        f"${cheap['cost_per_1k_usd']:.4f} per 1k",
        *[f"\nnote: {n}" for n in report.get("notes", [])],
        "",
        "| router | AIQ | best quality | cost to match best | quality at cheapest cost | arena |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(report["policies"], key=lambda r: -r["aiq"]):
        clamp = " (C clamped)" if p.get("arena_clamped") else ""
        lines.append(f"| {p['name']} | {p['aiq']:.4f} | {p['best_quality']:.4f} | "
                     f"{_pct(p['cost_to_match_best'])} | {_q(p['quality_at_cheapest_cost'])} | "
                     f"{p['arena']:.4f}{clamp} |")
    lines += ["", "| single target | quality | $/1k | arena |", "|---|---|---|---|"]
    for t in sorted(report["targets"], key=lambda t: t["cost_usd"]):
        lines.append(f"| {t['id']} | {t['quality']:.4f} | {t['cost_per_1k_usd']:.4f} | {t['arena']:.4f} |")
    lines += ["", "cost to match best: the cheapest knob setting whose quality reaches the best single "
              "target's, as a share of that target's cost; AIQ over the single targets' cost range."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out_prefix: str) -> list[str]:
    """One PNG: quality vs USD per 1k requests; each router's curve, single targets as points, oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    ax.set_prop_cycle(color=list(plt.get_cmap("tab20")(np.arange(20))))
    for p in report["policies"]:
        c = 1000 * np.array(p["curve"]["cost_usd"])
        q = np.array(p["curve"]["quality"])
        order = np.argsort(c, kind="stable")
        style: dict[str, Any] = {"oracle": dict(linestyle=":", marker="x", color="black"),
                                 "random": dict(linestyle="--", marker="", color="grey")}
        ax.plot(c[order], q[order], label=p["name"], **style.get(p["name"], dict(marker=".", ms=3)))
    for t in report["targets"]:
        ax.scatter([t["cost_per_1k_usd"]], [t["quality"]], marker="s", color="red", zorder=5)
        ax.annotate(t["id"], (t["cost_per_1k_usd"], t["quality"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    best = next(t for t in report["targets"] if t["id"] == report["best_target"])
    ax.axhline(best["quality"], color="red", linestyle=":", linewidth=0.8)
    ax.set(xlabel="USD per 1k requests", ylabel="quality",
           title=f"{', '.join(report['dataset'])} ({report['protocol']})")
    ax.legend(fontsize=7, loc="lower right")
    f = f"{out_prefix}-cost-quality.png"
    fig.savefig(f, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [f]
