"""The benchmark scripts run on a tiny size and write the contract keys (no timing assertions)."""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results"
PATHS = ("auto", "pinned", "own_route", "passthrough", "serve_llm", "litellm")
SUMMARY = (
    "auto_vs_passthrough_p50_ms", "auto_vs_passthrough_rps_ratio", "auto_vs_own_route_p50_ms_c1",
    "auto_vs_litellm_rps_ratio_c32", "auto_added_p99_ms_c8", "litellm_added_p99_ms_c8",
)


def _run(args: list[str], timeout: float) -> None:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.slow
def test_overhead_quick_writes_contract_keys() -> None:
    out = "overhead_test.json"
    # ~90 s on a quiet machine (all apps start together); much longer when the shared 2 cores are busy
    _run(["benchmarks/overhead.py", "--quick", "--concurrency", "1,8", "--seconds", "0.5",
          "--port", "8171", "--out", out], timeout=600)
    doc = json.loads((RESULTS / out).read_text())
    (RESULTS / out).unlink()
    for key in SUMMARY:
        assert key in doc
    assert set(doc["skipped"]) == {"litellm"}  # --quick leaves only LiteLLM out; serve_llm is measured
    for path in PATHS:
        assert path in doc
        if doc[path] is None:
            assert doc["skipped"][path]
            continue
        for c in ("1", "8"):
            cell = doc[path][c]
            assert {"p50_ms", "p99_ms", "rps"} <= set(cell)
            assert cell["rps"] > 0
    assert doc["results"]["auto"]["1"]["targets"]  # the router answered with x-router-target
    assert doc["results"]["auto"]["1"]["errors"] == 0
    assert doc["results"]["serve_llm"]["1"]["errors"] == 0  # Ray Serve LLM's app with the fake engine answered
    assert all(a["completion_tokens"] == 16 for a in doc["answers"].values())


def test_slo_quick_writes_contract_keys() -> None:
    out = "slo_test.json"
    _run(["benchmarks/slo.py", "--quick", "--requests", "300", "--out", out], timeout=60)
    doc = json.loads((RESULTS / out).read_text())
    (RESULTS / out).unlink()
    assert doc["simulated"] is True
    for name in ("cheapest-fit", "quality-threshold", "always-cheapest", "always-strongest", "round-robin"):
        assert {"slo_attainment", "cost_per_1k_usd"} <= set(doc["policies"][name])


def test_startup_config_copy_changes_port(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import yaml

    from benchmarks.startup import config_copy

    out = config_copy(ROOT / "cluster.yaml", 8199, tmp_path / "c.yaml", str(tmp_path / "cache"))
    cfg = yaml.safe_load(out.read_text())
    assert cfg["http_options"]["port"] == 8199
    assert cfg["applications"][0]["args"]["cache_dir"] == str(tmp_path / "cache")


def test_startup_timeline_reads_phases_from_replica_logs(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.startup import timeline

    logs = tmp_path / "session_x" / "logs"
    logs.mkdir(parents=True)
    (logs / "worker-1.out").write_text("\n".join([
        ":job_id:01000000", ":actor_name:ServeReplica:router:model-small",
        "(MainProcess pid=7) INFO 11-23 10:00:20 [model.py:1] Resolved architecture: X",
        "(EngineCore pid=8) INFO 11-23 10:00:50 [core.py:1] Initializing a V1 LLM engine",
        "(Worker pid=9) INFO 11-23 10:01:05 [cpu_worker.py:1] libtcmalloc is not found",
        "(Worker pid=9) INFO 11-23 10:01:09 [default_loader.py:1] Loading weights took 2.2 seconds",
        "(EngineCore pid=8) INFO 11-23 10:01:11 [core.py:2] init engine (profile, ...) took 0.6 s",
        "(MainProcess pid=7) INFO 11-23 10:01:15 [hf.py:1] Detected the chat template",
    ]))
    (logs / "worker-2.out").write_text(":job_id:01000000\n:actor_name:SomethingElse\n")
    t0 = calendar.timegm(time.strptime("2026-11-23 10:00:00", "%Y-%m-%d %H:%M:%S"))
    assert timeline(tmp_path, t0) == {"model-small": {
        "replica_first_log_s": 20, "engine_core_up_s": 50, "worker_up_s": 65, "weights_loaded_s": 69,
        "engine_ready_s": 71, "replica_last_log_s": 75}}


def test_slo_live_judging_and_summary() -> None:
    """benchmarks/slo_live.py's SLO rules on hand-made records. Its --quick run is not tested here: it
    starts two vLLM CPU engines (1.5-5.5 min on this shared 2-core machine), beyond a ~3 min test."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.slo_live_stats import MIX, markdown, schedule, slo_met, summarize

    by_name = {c.name: c for c in MIX}
    priors = {"small": 0.35, "api": 0.85}
    ok = {"status": 200, "latency_ms": 900.0, "target": "small", "cost_usd": 1e-6}
    assert slo_met(ok, by_name["e2e_1500"], priors)
    assert not slo_met({**ok, "latency_ms": 1600.0}, by_name["e2e_1500"], priors)
    assert not slo_met(ok, by_name["min_quality"], priors)  # answered, but by a target below 0.8
    assert slo_met({**ok, "target": "api", "latency_ms": 9000.0}, by_name["min_quality"], priors)
    assert slo_met({**ok, "latency_ms": 9000.0}, by_name["unconstrained"], priors)
    assert not slo_met({**ok, "status": 0}, by_name["unconstrained"], priors)

    a, b = schedule(2.0, 30.0, 1), schedule(2.0, 30.0, 1)
    assert [(t, c.name, p) for t, c, p in a] == [(t, c.name, p) for t, c, p in b]  # seeded: same load
    assert 30 <= len(a) <= 90 and all(0 <= t < 30 for t, _, _ in a)

    recs = [{**ok, "cls": "e2e_1500"}, {**ok, "cls": "min_quality", "target": "api", "cost_usd": 1e-5},
            {**ok, "cls": "unconstrained", "status": 0, "target": "none", "cost_usd": 0.0}]
    s = summarize(recs, MIX, priors, {"api"}, seconds=10)
    assert s["slo_attainment"] == round(2 / 3, 4)
    assert s["fallback_share"] == round(1 / 3, 4) and s["error_share"] == round(1 / 3, 4)
    assert s["cost_per_1k_usd"] == round(11e-6 / 3 * 1000, 6)
    assert s["per_class"]["unconstrained"]["slo_attainment"] == 0.0
    assert "| p |" in markdown({"p": {"2": s}}, [2.0])
