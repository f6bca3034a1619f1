"""SLO attainment under load (P3) - SIMULATED (the real-engine run is not implemented yet).

    .venv/bin/python benchmarks/slo.py            # 3 rates x 5 policies, 10,000 requests each
    .venv/bin/python benchmarks/slo.py --quick    # 2,000 requests, one rate

Runs the discrete-event simulator of `policies.tuning.simulate` (the real policy objects deciding on a
live latency view fed by the simulation) on its default 3-target / 120-replica cluster with the mix of
issue 7: 50% of requests with a 1.5 s end-to-end bound, 30% with min_quality 0.8 (and a loose 6 s
end-to-end bound, so they count towards SLO attainment too), 20% unconstrained. Open-loop Poisson
arrivals at several rates around the local models' saturation.

Writes benchmarks/results/slo.json: {"simulated": true, "policies": {name: {slo_attainment,
cost_per_1k_usd, ..., classes}} at the headline rate, "runs": every rate}. `classes` breaks each cell
down per constraint class of the mix: slo_attainment, `feasible` (share of the class whose bound some
target meets on an idle cluster with the request's own output length and service-time draws, honouring
the quality floor: the ceiling no policy can beat), attainment_of_feasible, load (target shares),
outcomes (route / fallback / best_effort / reject shares), TTFT and e2e p50/p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from policies.tuning.simulate import compare, default_scenario, markdown  # noqa: E402
from policies.types import Constraints  # noqa: E402

POLICIES: dict[str, dict[str, Any]] = {
    "cheapest-fit": {"name": "cheapest-fit", "on_unsatisfiable": "best_effort"},
    "quality-threshold": {"name": "quality-threshold", "strong": "strong-api", "weak": "small", "threshold": 0.6},
    "always-cheapest": {"name": "always-cheapest"},
    "always-strongest": {"name": "always-strongest"},
    "round-robin": {"name": "round-robin"},
}


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4 if abs(x) < 10 else 1)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rates", default=None, help="comma list of req/s (default 600,1200,2400)")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--headline-rate", type=float, default=1200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    rates = [float(r) for r in (args.rates or ("1200" if args.quick else "600,1200,2400")).split(",")]
    sc = default_scenario()
    sc.requests = args.requests or (2000 if args.quick else 10000)
    sc.mix = [
        (0.5, Constraints(max_latency_ms=1500, latency_metric="e2e")),
        (0.3, Constraints(min_quality=0.8, max_latency_ms=6000, latency_metric="e2e")),
        (0.2, Constraints()),
    ]
    sc.policies = POLICIES
    runs = []
    for rate in rates:
        sc.rate = rate
        rep = compare(sc, list(POLICIES), "poisson", args.seed)
        print(markdown(rep), flush=True)
        runs.append(rep)
    head = min(runs, key=lambda r: abs(r["rate"] - args.headline_rate))
    strongest = next(r for r in head["policies"] if r["policy"] == "always-strongest")
    policies = {
        r["policy"]: {
            "slo_attainment": round(r["slo_attainment"], 4),
            "cost_per_1k_usd": round(r["cost_per_1k_usd"], 4),
            "cost_vs_always_strongest": round(r["cost_per_1k_usd"] / strongest["cost_per_1k_usd"], 3)
            if strongest["cost_per_1k_usd"] else None,
            "quality": round(r["quality"], 4), "rejected": round(r["rejected"], 4),
            "ttft_p50_ms": round(r["ttft_p50_ms"], 1), "ttft_p99_ms": round(r["ttft_p99_ms"], 1),
            "e2e_p99_ms": round(r["e2e_p99_ms"], 1), "load": {k: round(v, 3) for k, v in r["load"].items()},
            "classes": [_rounded(c) for c in r["classes"]],
        }
        for r in head["policies"]
    }
    doc = {
        "simulated": True,
        "note": "SIMULATED with policies.tuning.simulate (default 3-target, 120-replica scenario, service "
                "times from the scenario, not measured engines); the real-engine P3 run is not done yet.",
        "headline_rate_rps": head["rate"],
        "policies": policies,
        "runs": runs,
        "mix": [{"weight": w, "constraints": c.model_dump(exclude_none=True)} for w, c in sc.mix],
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/slo.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (args.out or ("slo_quick.json" if args.quick else "slo.json"))
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
