"""The cluster simulator runs the engine's real policies; small, fast scenarios."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.tuning import cli, simulate


def test_arrivals_keep_the_mean_rate():
    rng = np.random.default_rng(0)
    for kind in ("poisson", "bursty"):
        t = simulate.arrivals(20000, 500.0, kind, rng)
        assert np.all(np.diff(t) >= 0)
        assert 20000 / (t[-1] / 1000) == pytest.approx(500.0, rel=0.1)


def test_fit_service_recovers_prefill_line_and_tpot():
    rng = np.random.default_rng(0)
    p = rng.integers(10, 1000, 200)
    o = rng.integers(20, 200, 200)
    ttft = 50 + 0.2 * p + rng.normal(0, 2, 200)
    e2e = ttft + (o - 1) * 12.0
    s = simulate.fit_service(ttft, e2e, p, o)
    assert s.ttft_ms == pytest.approx(50, rel=0.1) and s.per_prompt_token_ms == pytest.approx(0.2, rel=0.1)
    assert s.tpot_ms == pytest.approx(12.0, rel=0.01)


def test_overload_breaks_always_strongest_but_not_cheapest_fit():
    sc = simulate.default_scenario()
    sc.requests, sc.rate = 4000, 1200.0
    rep = simulate.compare(sc, ["cheapest-fit", "quality-threshold", "always-strongest"])
    r = {x["policy"]: x for x in rep["policies"]}
    assert r["cheapest-fit"]["slo_attainment"] > 0.95
    assert r["always-strongest"]["slo_attainment"] < 0.6
    assert r["always-strongest"]["quality"] > r["cheapest-fit"]["quality"]
    assert r["always-strongest"]["cost_per_1k_usd"] > r["cheapest-fit"]["cost_per_1k_usd"]
    assert sum(r["cheapest-fit"]["load"].values()) == pytest.approx(1.0)
    assert r["cheapest-fit"]["replicas"] >= 100 and r["cheapest-fit"]["wall_s"] < 10


def test_cli_json(capsys):
    rc = cli.main(["simulate", "--requests", "1500", "--rate", "200,400", "--arrivals", "bursty",
                   "--policies", "cheapest-fit,always-strongest", "--json"])
    assert rc == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["rate"] for r in runs] == [200.0, 400.0]
    assert {p["policy"] for p in runs[0]["policies"]} == {"cheapest-fit", "always-strongest"}


def test_service_fitted_from_a_collected_table(tmp_path):
    recs = []
    for i in range(20):
        for tid, base in (("small", 40.0), ("other", 500.0)):
            p = 50 + 10 * i
            recs.append({"prompt": f"q{i}", "target": tid, "correct": 1, "prompt_tokens": p,
                         "completion_tokens": 51, "ttft_ms": base + 0.5 * p,
                         "e2e_ms": base + 0.5 * p + 50 * 6.0})
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    from policies.tuning.datasets import load_file

    sc = simulate.default_scenario()
    assert simulate.fit_from_table(sc, load_file(path)) == ["small"]
    s = sc.targets[0].service
    assert s.ttft_ms == pytest.approx(40, rel=0.05) and s.tpot_ms == pytest.approx(6.0, rel=0.01)


def test_per_class_breakdown_and_idle_ceiling():
    sc = simulate.default_scenario()
    sc.requests, sc.rate = 3000, 600.0
    sc.mix = [(0.5, simulate.Constraints(max_latency_ms=1500, latency_metric="e2e")),
              (0.3, simulate.Constraints(min_quality=0.8, max_latency_ms=6000, latency_metric="e2e")),
              (0.2, simulate.Constraints())]
    r = simulate.simulate(sc, {"name": "cheapest-fit", "on_unsatisfiable": "best_effort"})
    classes = r["classes"]
    assert [c["class"] for c in classes] == [0, 1, 2]
    assert sum(c["requests"] for c in classes) == r["requests"]
    e2e, qual, free = classes
    # Outputs too long for the fastest target at 8 ms/token cannot finish in 1.5 s on an idle cluster.
    assert 0.8 < e2e["feasible"] < 0.95
    # Nobody beats the ceiling while honouring the floor; overall attainment is the weighted classes.
    assert e2e["slo_attainment"] <= e2e["feasible"] + 1e-9
    met = (e2e["slo_attainment"] * e2e["requests"] + qual["slo_attainment"] * qual["requests"])
    assert met / (e2e["requests"] + qual["requests"]) == pytest.approx(r["slo_attainment"])
    assert free["slo_attainment"] is None and free["feasible"] is None
    for c in classes:
        assert sum(c["load"].values()) == pytest.approx(1.0)
        assert sum(c["outcomes"].values()) == pytest.approx(1.0)
        assert c["e2e_p50_ms"] <= c["e2e_p99_ms"]
    assert "met of feasible" in simulate.markdown(simulate.compare(sc, ["always-cheapest"]))
