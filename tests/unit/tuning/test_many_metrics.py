"""Many-target metrics against hand-computed cases: AIQ on real cost, cost to match the best,
quality at the cheapest cost, best quality, RouterArena's score, and the oracle's tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from policies.tuning import metrics as m

# two single targets: A (cost 1, quality 0.5) and B (cost 3, quality 0.8) -> cost range [1, 3]
TQ, TC = np.array([0.5, 0.8]), np.array([1.0, 3.0])


def test_aiq_over_single_target_range():
    # hull (1,.5) (2,.75) (3,.8): trapezoids 0.625 + 0.775 over a range of 2
    assert m.aiq_points([1, 2, 3], [0.5, 0.75, 0.8], (1, 3)) == pytest.approx(0.7, abs=1e-9)
    # (2, .6) lies under the chord (1.5,.7)-(3,.8): hull area 0.3 + 1.125 over 2
    assert m.aiq_points([1, 1.5, 2, 3], [0.5, 0.7, 0.6, 0.8], (1, 3)) == pytest.approx(0.7125, abs=1e-9)
    # non-decreasing: the dearest point (3, .6) is lifted to .9: (0.5 + 0.9) / 2 + 0.9 over 2
    assert m.aiq_points([1, 2, 3], [0.5, 0.9, 0.6], (1, 3)) == pytest.approx(0.8, abs=1e-9)


def test_aiq_counts_zero_below_the_routers_cheapest_point_and_flat_above():
    # points only at cost 2 and 3: [1, 2) unreachable -> 0; [2, 3] trapezoid 0.75 -> 0.375
    assert m.aiq_points([2, 3], [0.7, 0.8], (1, 3)) == pytest.approx(0.375, abs=1e-9)
    # one point at the cheap end: flat at its quality over the whole range
    assert m.aiq_points([1], [0.6], (1, 3)) == pytest.approx(0.6, abs=1e-6)


def test_best_target_is_the_cheapest():
    tq, tc = np.array([0.8, 0.5]), np.array([1.0, 3.0])  # A is better AND cheaper
    assert m.best_target(tq, tc) == 0 and m.cheapest_target(tq, tc) == 0
    s = m.summarize_n(np.array([1.0, 2.0, 3.0]), np.array([0.8, 0.7, 0.5]), tq, tc)
    # hull of (1,.8) (2,.7) (3,.5) is flat at .8: AIQ .8, not a degenerate value
    assert s["aiq"] == pytest.approx(0.8, abs=1e-6)
    assert s["cost_to_match_best"] == pytest.approx(1.0)  # cost 1 / best target's cost 1
    assert s["quality_at_cheapest_cost"] == pytest.approx(0.8)
    assert s["best_quality"] == pytest.approx(0.8)


def test_cost_to_match_best_and_never():
    cost, q = np.array([1.0, 2.0, 2.5, 3.0]), np.array([0.5, 0.8, 0.85, 0.8])
    s = m.summarize_n(cost, q, TQ, TC)
    assert s["cost_to_match_best"] == pytest.approx(2.0 / 3.0)  # first point reaching .8 costs 2 of B's 3
    assert s["best_quality"] == pytest.approx(0.85)
    never = m.summarize_n(np.array([1.0, 3.0]), np.array([0.5, 0.79]), TQ, TC)
    assert never["cost_to_match_best"] is None


def test_quality_at_cheapest_cost():
    # cheapest target costs 1: points at .5 and 1 qualify, the one at 1.2 does not
    s = m.summarize_n(np.array([0.5, 1.0, 1.2]), np.array([0.3, 0.55, 0.9]), TQ, TC)
    assert s["quality_at_cheapest_cost"] == pytest.approx(0.55)
    none = m.summarize_n(np.array([1.5, 2.0]), np.array([0.6, 0.7]), TQ, TC)
    assert none["quality_at_cheapest_cost"] is None


def test_ties_between_single_targets():
    # equal quality: the cheaper is "best"; equal cost: the better is "cheapest"
    assert m.best_target(np.array([0.7, 0.7, 0.6]), np.array([3.0, 2.0, 1.0])) == 1
    assert m.cheapest_target(np.array([0.4, 0.6, 0.9]), np.array([1.0, 1.0, 2.0])) == 1
    # cost_to_match_best divides by the cheaper of the tied best targets (cost 2)
    s = m.summarize_n(np.array([1.0, 2.0]), np.array([0.6, 0.7]), np.array([0.7, 0.7, 0.6]),
                      np.array([3.0, 2.0, 1.0]))
    assert s["cost_to_match_best"] == pytest.approx(1.0)


def test_arena_score_hand_computed():
    # A = 0.6 at $0.3 per 1k: C = (log2 200 - log2 0.3) / (log2 200 - log2 0.0044)
    #   = (7.643856 + 1.736966) / (7.643856 + 7.828281) = 0.606304
    # S = 1.1 * 0.6 * 0.606304 / (0.1 * 0.6 + 0.606304) = 0.600568
    s, clamped = m.arena_score(0.6, 0.3)
    assert s == pytest.approx(0.600568, abs=1e-6) and not clamped
    # cheaper than $0.0044 per 1k: C clamped to 1, S = 1.1 * 0.5 / (0.05 + 1) = 0.523810
    s, clamped = m.arena_score(0.5, 0.001)
    assert s == pytest.approx(0.523810, abs=1e-6) and clamped
    # dearer than $200 per 1k: C clamped to 0, S = 0
    s, clamped = m.arena_score(0.9, 500.0)
    assert s == 0.0 and clamped
    # the summary picks the router's best point for S and says whether C was clamped there
    row = m.summarize_n(np.array([0.3e-3, 1e-6]), np.array([0.6, 0.5]), TQ, TC)
    assert row["arena"] == pytest.approx(max(0.600568, 0.523810), abs=1e-6)
    assert row["arena_clamped"] is False and row["arena_point"]["cost_per_1k_usd"] == pytest.approx(0.3)


def test_oracle_ties_go_to_the_cheaper_target():
    q = np.array([[1.0, 1.0, 0.0],   # two right: the cheaper right one (cost 1)
                  [0.0, 0.0, 0.0],   # none right: the cheapest of all
                  [0.5, 0.7, 0.7],   # fractional tie at .7: cost 2 beats cost 3
                  [1.0, 1.0, 1.0]])  # all right, costs tie between 0 and 1 -> first
    c = np.array([[2.0, 1.0, 3.0], [2.0, 1.0, 3.0], [1.0, 3.0, 2.0], [1.0, 1.0, 2.0]])
    assert m.oracle_choices(q, c).tolist() == [1, 1, 2, 0]


def test_oracle_cost_weight_trades_quality_for_cost():
    q, c = np.array([[1.0, 0.0]]), np.array([[3.0, 1.0]])
    assert m.oracle_choices(q, c, 0.4).tolist() == [0]  # 1 - 1.2 > 0 - 0.4
    assert m.oracle_choices(q, c, 1.0).tolist() == [1]  # 1 - 3 < 0 - 1
    ws = m.oracle_weights(q, c)
    picks = {int(m.oracle_choices(q, c, w)[0]) for w in ws}
    assert picks == {0, 1} and ws[0] == 0.0  # the sweep reaches both ends


def test_two_target_oracle_sends_ties_to_the_cheaper():
    # dearer target first: gain only on row 0; rows 1-2 tie, and the oracle never pays for a tie
    qd, qc = np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0])
    cd, cc = np.full(3, 10.0), np.full(3, 1.0)
    curve = m.oracle_curve(qd, qc, cd, cc, num_results=3)
    assert curve.cost.max() == pytest.approx((10 + 1 + 1) / 3)
    assert curve.quality.max() == pytest.approx(2 / 3)


def test_random_router_mixes_the_single_targets_hull():
    from policies.tuning.many import random_row

    # A (cost 1, .5), B (cost 2, .4: under the hull), C (cost 3, .8), D (cost 4, .6: dearer and worse)
    tq, tc = np.array([0.5, 0.4, 0.8, 0.6]), np.array([1.0, 2.0, 3.0, 4.0])
    q, c = np.tile(tq, (5, 1)), np.tile(tc, (5, 1))
    row = random_row(q, c, tq, tc, ["A", "B", "C", "D"])
    assert row["curve"]["shares"]["B"] == [0.0] * 11 and row["curve"]["shares"]["D"] == [0.0] * 11
    assert row["curve"]["quality"][5] == pytest.approx(0.65)  # half A, half C
    # the A-C chord over [1, 3], flat at .8 up to 4: (0.65 * 2 + 0.8) / 3
    assert row["aiq"] == pytest.approx((0.65 * 2 + 0.8) / 3, abs=1e-4)
    assert row["cost_to_match_best"] == pytest.approx(1.0)  # only all-C matches C
