"""Plot benchmarks/results/overhead.json (or another overhead results file): p50 latency and throughput
against concurrency, one line per path.

    .venv/bin/python benchmarks/plot_overhead.py [results/overhead.json] [results/overhead.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else RESULTS / "overhead.json"
    dst = Path(argv[1]) if len(argv) > 1 else src.with_suffix(".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(src.read_text())
    cells = doc["results"]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path, by_c in cells.items():
        cs = sorted(int(c) for c in by_c)
        lat.plot(cs, [by_c[str(c)]["p50_ms"] for c in cs], marker="o", label=path)
        thr.plot(cs, [by_c[str(c)]["rps"] for c in cs], marker="o", label=path)
    for ax, label in ((lat, "p50 latency (ms)"), (thr, "throughput (req/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    lat.set_yscale("log")
    thr.set_yscale("log")  # provider_direct (no Serve at all) is 10-30x the others
    thr.legend(fontsize=8)
    engine = doc.get("engine", {}).get("kind", "fake") if isinstance(doc.get("engine"), dict) else doc.get("engine")
    fig.suptitle(f"routing overhead ({engine} engine), {doc.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
