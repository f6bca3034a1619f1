"""`tune calibrate` (threshold sweep, goals, snippet that the policy config accepts) and `tune train`."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from policies.tuning import calibrate, datasets, train


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    hard = rng.random(n)
    qs = (rng.random(n) > hard * 0.5).astype(float)
    qw = (rng.random(n) > hard).astype(float)
    # embeddings carry the difficulty so a predictor can learn it
    emb = np.stack([hard, 1 - hard, rng.normal(0, 0.05, n)], axis=1).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    t = datasets.RouteTable(prompts=[f"q{i}" for i in range(n)], targets=["big", "small"],
                            quality=np.stack([qs, qw], 1), dataset=np.full(n, "synthetic"),
                            cost_usd=np.stack([np.full(n, 0.01), np.full(n, 0.001)], 1))
    return t, emb


def test_sweep_hand_case():
    sw = calibrate.sweep(np.array([0.9, 0.1, 0.5]), np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0]),
                         np.full(3, 10.0), np.full(3, 1.0))
    assert sw.share.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert sw.threshold[1] == pytest.approx(0.3) and sw.threshold[2] == pytest.approx(0.7)
    assert sw.quality.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert sw.cost_per_1k.tolist() == pytest.approx([1000, 4000, 7000, 10000])


@pytest.mark.parametrize("goal", [{"strong_share": 0.3}, {"budget_per_1k": 5.0}, {"min_pgr": 0.8}])
def test_calibrate_goals_and_snippet_parses(goal):
    from policies.config import parse_policy

    t, emb = _table()
    r = calibrate.calibrate(t, emb, policy="quality-threshold", kind="logistic", **goal)
    if "strong_share" in goal:
        assert r["strong_share"] == pytest.approx(0.3, abs=0.05)
    if "budget_per_1k" in goal:
        assert r["cost_per_1k_usd"] <= 5.0
    if "min_pgr" in goal:
        assert r["pgr"] >= 0.8
    snip = yaml.safe_load(r["snippet"])
    cfg = parse_policy(snip["policy"])
    assert cfg.threshold == pytest.approx(r["threshold"], abs=1e-4)
    assert (cfg.strong, cfg.weak) == ("big", "small")
    assert snip["quality"]["kind"] == "logistic"


def test_cheapest_fit_min_quality():
    t, emb = _table()
    r = calibrate.calibrate(t, emb, policy="cheapest-fit", kind="knn", strong_share=0.5)
    assert 0.0 <= r["min_quality"] <= 1.0 and "x-router-min-quality" in r["snippet"]


def test_train_saves_artifact_the_engine_loads(tmp_path):
    from policies.predictors import load_predictor

    t, emb = _table()
    path = train.fit(t, emb, "logistic").save(tmp_path / "art")
    pred = load_predictor(path)
    p = pred.predict_embeddings(emb[:5])
    assert set(p) == {"big", "small"} and all(0 <= v <= 1 for v in p["big"])
