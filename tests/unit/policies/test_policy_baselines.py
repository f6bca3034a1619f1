"""Baselines, cascade, and the cost model."""

from __future__ import annotations

import pytest

from policies.baselines import (
    Always,
    AlwaysCheapest,
    AlwaysConfig,
    AlwaysStrongest,
    QualityThreshold,
    QualityThresholdConfig,
    RandomConfig,
    RandomPolicy,
    RoundRobin,
)
from policies.cascade import Cascade, CascadeConfig
from policies.cost import expected_cost_usd, local_price_per_mtok, local_prices, with_local_price
from policies.predictors import PriorPredictor
from tests.unit.policies.helpers import TARGETS, req, target, view


def test_cost_model():
    t = target("x", price=1.0)  # $1 / 1M in, $2 / 1M out
    assert expected_cost_usd(t, req(tokens=1000, out=500)) == pytest.approx(1000e-6 + 500 * 2e-6)
    # $3.6/h at 1000 tok/s = 3.6M tokens per hour -> $1 per 1M.
    assert local_price_per_mtok(3.6, 1000) == pytest.approx(1.0)
    inp, out = local_prices(3.6, 1000)
    assert out == pytest.approx(1.0) and inp == pytest.approx(0.1)
    priced = with_local_price(target("y"), 3.6, 1000, 5000)
    assert (priced.input_price_per_mtok, priced.output_price_per_mtok) == pytest.approx((0.2, 1.0))
    assert with_local_price(t, 3.6, 1000) is t  # a set price wins
    with pytest.raises(ValueError):
        local_price_per_mtok(1.0, 0)


def test_always():
    d = Always(AlwaysConfig(target="mid")).decide(req(), view())
    assert (d.target, d.outcome, d.alternates) == ("mid", "route", ())
    d = Always(AlwaysConfig(target="mid")).decide(req(), view(health={"mid": False}))
    assert d.outcome == "reject" and d.reason == "always:no-candidate"


def test_always_cheapest_and_strongest():
    d = AlwaysCheapest().decide(req(min_quality=0.6), view())
    assert d.target == "small" and d.outcome == "best_effort" and d.reason.endswith("min_quality")
    assert AlwaysStrongest().decide(req(), view()).target == "gpt"
    assert AlwaysStrongest().decide(req(allow_fallback=False), view()).target == "mid"


def test_random_is_deterministic_per_seed_and_prompt():
    p = RandomPolicy(RandomConfig(seed=3))
    picks = [p.decide(req(prompt=f"q{i}"), view()).target for i in range(60)]
    assert picks == [RandomPolicy(RandomConfig(seed=3)).decide(req(prompt=f"q{i}"), view()).target
                     for i in range(60)]
    assert set(picks) == {"small", "mid", "gpt"}
    other = [RandomPolicy(RandomConfig(seed=4)).decide(req(prompt=f"q{i}"), view()).target for i in range(60)]
    assert other != picks


def test_round_robin_cycles():
    p = RoundRobin()
    got = [p.decide(req(), view()).target for _ in range(4)]
    assert got == ["small", "mid", "gpt", "small"]
    d = p.decide(req(), view())
    assert d.alternates == ("gpt", "small")


def test_quality_threshold_routes_on_weak_score():
    cfg = dict(strong="gpt", weak="small")
    # P(small ok) = 0.4: below 0.5 -> strong, above 0.3 -> weak.
    d = QualityThreshold(QualityThresholdConfig(threshold=0.5, **cfg)).decide(req(), view())
    assert (d.target, d.alternates, d.reason) == ("gpt", ("small",), "quality-threshold:strong")
    d = QualityThreshold(QualityThresholdConfig(threshold=0.3, **cfg)).decide(req(), view())
    assert d.target == "small" and d.reason == "quality-threshold:weak"
    # win-rate: P(strong wins) = 0.9 - 0.4 = 0.5, score 0.5.
    wr = QualityThresholdConfig(threshold=0.6, score="win-rate", **cfg)
    assert QualityThreshold(wr).decide(req(), view()).target == "gpt"
    # strong unavailable -> the weak one, whatever the score
    qt = QualityThreshold(QualityThresholdConfig(threshold=0.9, **cfg))
    d = qt.decide(req(allow_fallback=False), view())
    assert d.target == "small"


def test_cascade_chain_and_escalation():
    p = Cascade()
    d = p.decide(req(min_quality=0.95), view())
    assert (d.target, d.alternates, d.outcome) == ("small", ("mid", "gpt"), "route")
    assert not p.accept("") and p.accept("Paris is the capital of France.")  # the router escalates on False
    chained = Cascade(CascadeConfig(chain=("mid", "gpt"))).decide(req(), view())
    assert (chained.target, chained.alternates) == ("mid", ("gpt",))
    # the latency bound still applies: small/mid miss 500 ms e2e at 200 tokens? all do -> best_effort
    be = p.decide(req(out=200, max_latency_ms=10), view())
    assert be.outcome == "best_effort"


@pytest.mark.parametrize(
    ("text", "logprob", "ok"),
    [
        ("The answer is 42 because 6 x 7 = 42.", -0.3, True),
        ("The answer is 42 because 6 x 7 = 42.", None, True),
        ("The answer is 42 because 6 x 7 = 42.", -2.5, False),
        ("", None, False),
        ("  ok ", None, False),
        ("I'm sorry, but I can't help with that request.", -0.1, False),
        ("As an AI language model, I cannot browse.", None, False),
    ],
)
def test_cascade_accept(text, logprob, ok):
    assert Cascade().accept(text, logprob) is ok


def test_prior_predictor_table_overrides_target_prior():
    p = PriorPredictor({"small": 0.8})
    assert p.predict("x", TARGETS) == {"small": 0.8, "mid": 0.7, "gpt": 0.9}
    with pytest.raises(ValueError):
        PriorPredictor({"small": 1.5})
