"""RouteLLM / RouterBench metrics against small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from policies.tuning import metrics as m

QS = np.array([1.0, 1.0, 0.0, 1.0])
QW = np.array([0.0, 0.0, 0.0, 1.0])


def test_hand_computed_curve_apgr_and_cpt():
    # quartile edges of [4,3,2,1] are 1, 1.75, 2.5, 3.25, 4 -> strong shares 1, .75, .5, .25, 0
    c = m.routing_curve(np.array([4.0, 3.0, 2.0, 1.0]), QS, QW, num_results=4)
    assert c.share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert c.quality.tolist() == [0.25, 0.5, 0.75, 0.75, 0.75]
    # trapezoid area 0.625; (0.625 - 0.25) / (0.75 - 0.25)
    assert m.apgr(c, 0.25, 0.75) == pytest.approx(0.75)
    assert m.cpt(c, 0.5, 0.25, 0.75) == pytest.approx(0.25)
    assert m.cpt(c, 0.8, 0.25, 0.75) == pytest.approx(0.25 + 0.15 / 0.25 * 0.25)


def test_cpt_equals_routellm_np_interp_on_monotone_curves():
    c = m.routing_curve(np.array([4.0, 3.0, 2.0, 1.0]), QS, QW, num_results=4)
    for x in (0.2, 0.5, 0.8):
        target = 0.25 + x * 0.5
        # RouteLLM: np.interp(target, accuracy, strong_percentage); first crossing on plateaus
        assert m.cpt(c, x, 0.25, 0.75) == pytest.approx(np.interp(target, c.quality, c.share))


def test_inverted_router_is_worse_than_random_and_perfect_is_best():
    rng = np.random.default_rng(1)
    qs = (rng.random(2000) < 0.8).astype(float)
    qw = (rng.random(2000) < 0.6).astype(float)
    w, s = qw.mean(), qs.mean()
    gain = qs - qw
    perfect = m.apgr(m.routing_curve(gain + 1e-9 * rng.random(2000), qs, qw), w, s)
    inverted = m.apgr(m.routing_curve(-gain + 1e-9 * rng.random(2000), qs, qw), w, s)
    oracle = m.apgr(m.oracle_curve(qs, qw), w, s)
    assert perfect > 1.0 and inverted < 0.0
    # the oracle never calls the strong model where it loses, so it bounds the perfect scorer
    assert oracle >= perfect > 1.0


def test_random_router_apgr_is_half_in_expectation():
    rng = np.random.default_rng(0)
    qs = (rng.random(1000) < 0.8).astype(float)
    qw = (rng.random(1000) < 0.65).astype(float)
    vals = [m.apgr(m.routing_curve(rng.random(1000), qs, qw), qw.mean(), qs.mean()) for _ in range(200)]
    assert np.mean(vals) == pytest.approx(0.5, abs=0.02)


def test_oracle_matches_routellm_optimal_accuracy():
    # 10 prompts: weak right on 5, strong-only right on 3 -> optimal(p) = (5 + min(10p, 3)) / 10
    qw = np.array([1] * 5 + [0] * 5, dtype=float)
    qs = np.array([1] * 5 + [1] * 3 + [0] * 2, dtype=float)
    c = m.oracle_curve(qs, qw)
    expect = [(5 + min(10 * p, 3)) / 10 for p in np.linspace(0, 1, 11)]
    assert c.quality == pytest.approx(expect)


def test_aiq_hull_area():
    c = m.Curve(share=np.array([0, 0.3, 0.6, 1.0]), quality=np.array([0.5, 0.6, 0.9, 0.8]),
                cost=np.array([0.0, 1.0, 2.0, 3.0]), threshold=np.zeros(4))
    hx, hy = m.upper_hull(c.cost, c.quality)
    assert hx.tolist() == [0.0, 2.0, 3.0] and hy.tolist() == [0.5, 0.9, 0.9]
    # (0.5 + 0.9) / 2 * 2 + 0.9 * 1, over a cost range of 3
    assert m.aiq(c) == pytest.approx(2.3 / 3, abs=1e-3)


def test_summarize_reports_shares_as_fractions():
    c = m.routing_curve(np.array([4.0, 3.0, 2.0, 1.0]), QS, QW, num_results=4)
    s = m.summarize(c, 0.25, 0.75)
    assert set(s) == {"apgr", "cpt20", "cpt50", "cpt80", "aiq"}
    assert all(0.0 <= s[k] <= 1.0 for k in ("cpt20", "cpt50", "cpt80"))
