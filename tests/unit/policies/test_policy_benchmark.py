"""benchmarks/decision.py --quick runs and writes the documented JSON (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_decision_benchmark_quick(tmp_path):
    out = tmp_path / "decision.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "decision.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"policies", "runs", "machine", "date", "command"} <= set(data)
    assert "cheapest-fit" in data["policies"] and "quality-threshold" in data["policies"]
    for cell in data["policies"].values():
        assert {"p50_us", "p99_us", "decisions_per_s", "targets"} <= set(cell)
        assert cell["p99_us"] >= cell["p50_us"] > 0
    assert {c["targets"] for c in data["runs"]} == {2, 10}
