"""The results document: per-path cells, the summary keys of issue 7, and the BENCHMARKS.md table."""

from __future__ import annotations

from typing import Any

from benchmarks.overheadlib.common import PATHS


def summarize(results: dict[str, dict[str, Any]], skipped: dict[str, str], conc: list[int],
              litellm_base: str = "provider_direct") -> dict[str, Any]:
    def get(path: str, c: int, key: str) -> float | None:
        v = results.get(path, {}).get(str(c), {}).get(key)
        return v if isinstance(v, int | float) else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 3)

    cmax = max(conc)
    by_c = {
        str(c): {
            "auto_vs_passthrough_p50_ms": diff(get("auto", c, "p50_ms"), get("passthrough", c, "p50_ms")),
            "auto_vs_passthrough_rps_ratio": ratio(get("auto", c, "rps"), get("passthrough", c, "rps")),
            "auto_vs_own_route_p50_ms": diff(get("auto", c, "p50_ms"), get("own_route", c, "p50_ms")),
            "passthrough_vs_own_route_p50_ms": diff(get("passthrough", c, "p50_ms"), get("own_route", c, "p50_ms")),
            "auto_vs_pinned_p50_ms": diff(get("auto", c, "p50_ms"), get("pinned", c, "p50_ms")),
            "auto_vs_litellm_rps_ratio": ratio(get("auto", c, "rps"), get("litellm", c, "rps")),
        }
        for c in conc
    }
    table: dict[str, Any] = {}
    for p in PATHS:
        if p in results:
            table[p] = {c: {k: v for k, v in r.items() if k in ("p50_ms", "p99_ms", "rps")}
                        for c, r in results[p].items()}
        else:
            table[p] = None
    c_rps = 32 if 32 in conc else cmax
    return {
        **table,
        "results": results,
        "skipped": skipped,
        # p50 difference at c=1 (latency, no queueing); rps ratio at the highest concurrency run
        "auto_vs_passthrough_p50_ms": by_c[str(min(conc))]["auto_vs_passthrough_p50_ms"],
        "auto_vs_passthrough_rps_ratio": by_c[str(c_rps)]["auto_vs_passthrough_rps_ratio"],
        "auto_vs_own_route_p50_ms_c1": by_c.get("1", {}).get("auto_vs_own_route_p50_ms"),
        "auto_vs_litellm_rps_ratio_c32": by_c.get("32", {}).get("auto_vs_litellm_rps_ratio"),
        "auto_added_p99_ms_c8": diff(get("auto", 8, "p99_ms"), get("own_route", 8, "p99_ms")),
        "litellm_added_p99_ms_c8": diff(get("litellm", 8, "p99_ms"), get(litellm_base, 8, "p99_ms")),
        "auto_vs_litellm_w2_rps_ratio_c32": ratio(get("auto", 32, "rps"), get("litellm_w2", 32, "rps")),
        "litellm_w2_added_p99_ms_c8": diff(get("litellm_w2", 8, "p99_ms"), get(litellm_base, 8, "p99_ms")),
        "summary_by_concurrency": by_c,
        "definitions": {
            "auto_vs_passthrough_p50_ms": "auto p50 - passthrough p50 at the lowest concurrency run (c=1)",
            "auto_vs_passthrough_rps_ratio": f"auto rps / passthrough rps at c={c_rps}",
            "auto_added_p99_ms_c8": "auto p99 - own_route p99 at c=8 (what the router adds over one hop)",
            "litellm_added_p99_ms_c8": f"litellm p99 - {litellm_base} p99 at c=8 (what LiteLLM adds over "
                                       "calling the server it forwards to directly)",
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md table: p50 / p99 ms and rps per path x concurrency, CPU ms per request."""
    res = doc["results"]
    cs = sorted({int(c) for r in res.values() for c in r})
    cpu_c = "8" if 8 in cs else str(max(cs, default=1))
    lines = ["| path | " + " | ".join(f"c={c} p50 / p99 ms, rps" for c in cs) + f" | CPU ms/req (c={cpu_c}) |",
             "|---|" + "---|" * (len(cs) + 1)]
    for p, r in res.items():
        cells = [f"{r[str(c)]['p50_ms']:.1f} / {r[str(c)]['p99_ms']:.1f}, {r[str(c)]['rps']:.0f}"
                 if str(c) in r else "-" for c in cs]
        cpu = r.get(cpu_c, {}).get("cpu_ms_per_req")
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {cpu if cpu is not None else '-'} |")
    return "\n".join(lines)


CMP_PATHS = ("auto", "own_route", "passthrough")


def compare_summary(runs: dict[str, list[dict[str, Any]]], presets: list[str]) -> dict[str, Any]:
    """Per preset and round: p50 / p99 / rps of each path per concurrency, and (ratios within a round only)
    auto's rps and p50 against the first preset of the same round."""
    base = presets[0]
    out: dict[str, Any] = {"baseline_preset": base, "by_preset": {}}
    for preset, docs in runs.items():
        rounds = []
        for i, doc in enumerate(docs):
            res = doc.get("results") or {}
            cells = {p: {c: {k: r.get(k) for k in ("p50_ms", "p99_ms", "rps", "errors", "cpu_ms_per_req")}
                         for c, r in res[p].items()} for p in res}
            vs: dict[str, Any] = {}
            b_doc = runs[base][i] if i < len(runs[base]) else {}
            b_auto = (b_doc.get("results") or {}).get("auto", {})
            for c, r in (res.get("auto") or {}).items():
                b = b_auto.get(c) or {}
                vs[c] = {
                    "auto_rps_ratio": round(r["rps"] / b["rps"], 3) if b.get("rps") else None,
                    "auto_p50_ms_diff": round(r["p50_ms"] - b["p50_ms"], 2) if b.get("p50_ms") else None,
                }
            rounds.append({"cells": cells, "vs_baseline": vs, "error": doc.get("error"),
                           "idle_cpu_cores_by_stack": doc.get("idle_cpu_cores_by_stack"),
                           "env": doc.get("env"), "setup_s": doc.get("setup_s"),
                           "skipped": {k: v for k, v in (doc.get("skipped") or {}).items()
                                       if k in CMP_PATHS}})
        out["by_preset"][preset] = rounds
    return out


def compare_markdown(doc: dict[str, Any]) -> str:
    """One row per preset x round: auto (and own_route / passthrough) p50 / p99 ms and rps per concurrency."""
    rows: list[str] = []
    cs: list[str] = []
    for rounds in doc["by_preset"].values():
        for r in rounds:
            for cells in r["cells"].values():
                cs = sorted(set(cs) | set(cells), key=int)
    rows.append("| preset | round | path | " + " | ".join(f"c={c} p50 / p99 ms, rps" for c in cs)
                + " | auto rps vs baseline (same round) |")
    rows.append("|---|---|---|" + "---|" * (len(cs) + 1))
    for preset, rounds in doc["by_preset"].items():
        for i, r in enumerate(rounds):
            if r.get("error"):
                rows.append(f"| {preset} | {i + 1} | - | {r['error']} |")
                continue
            for p in CMP_PATHS:
                cells = r["cells"].get(p)
                if not cells:
                    continue
                vals = [f"{cells[c]['p50_ms']:.1f} / {cells[c]['p99_ms']:.1f}, {cells[c]['rps']:.0f}"
                        if c in cells else "-" for c in cs]
                vs = ", ".join(f"c={c} {v['auto_rps_ratio']}" for c, v in r["vs_baseline"].items()) \
                    if p == "auto" else ""
                rows.append(f"| {preset} | {i + 1} | {p} | " + " | ".join(vals) + f" | {vs} |")
    return "\n".join(rows)
