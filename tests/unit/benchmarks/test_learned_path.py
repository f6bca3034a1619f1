"""benchmarks/learned_path.py --quick runs through real Serve and writes the contract keys (no timing
assertions: the numbers are measured, BENCHMARKS.md reports them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
KEYS = ("added_p50_ms_c8", "rps_ratio_c8", "chunk_gap_p99_ms_prior", "chunk_gap_p99_ms_learned")


@pytest.mark.slow
@pytest.mark.integration
def test_learned_path_quick_writes_contract_keys(tmp_path: Path) -> None:
    # The featurizer build is skipped when up to date; on a fresh machine it takes ~1 min.
    build = subprocess.run([sys.executable, "-m", "policies.tuning", "featurizer", "build", "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    out = tmp_path / "learned_path.json"
    r = subprocess.run([sys.executable, "benchmarks/learned_path.py", "--quick", "--port", "8272", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(doc[key], (int, float))
    learned = doc["rounds"]["learned"][0]
    assert learned["errors"] == 0 and learned["n"] > 0
    # the learned policy decided per prompt: both models got traffic; the prior sent all to one
    assert set(learned["targets"]) == {"fake-a", "fake-b"}
    assert set(doc["rounds"]["prior"][0]["targets"]) == {"fake-b"}
