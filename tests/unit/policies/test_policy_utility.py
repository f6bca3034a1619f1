"""The `utility` policy: best predicted quality for the price, hard bounds, abstention."""

from __future__ import annotations

import pytest

from policies.base import StaticView
from policies.config import build_policy, parse_policy
from policies.latency import LatencyEstimator
from policies.predictors import PriorPredictor
from policies.types import LatencyPrior
from policies.utility import Utility, UtilityConfig
from tests.unit.policies.helpers import req, target

# Prices per 1M input tokens (output is 2x, see helpers.target); a request of 100 in + 64 out tokens
# costs price * 228 / 1e6 USD, i.e. price * 0.228 USD per 1k requests.
CHEAP = target("cheap", price=1.0, quality=0.5, latency=LatencyPrior(ttft_ms=50, tpot_ms=10))
MID = target("mid", price=2.0, quality=0.7, latency=LatencyPrior(ttft_ms=80, tpot_ms=10))
BIG = target("big", price=10.0, quality=0.9, latency=LatencyPrior(ttft_ms=400, tpot_ms=40))
TARGETS = [BIG, MID, CHEAP]  # config order deliberately not by price


class _Pred(PriorPredictor):
    """A prior table with a settable familiarity, as a learned predictor reports it."""

    def __init__(self, table, support=1.0, prior=None):
        super().__init__(table)
        self._support = support
        self._prior = prior or {}

    def support(self, prompt):
        return self._support

    @property
    def prior(self):
        return self._prior


def _view(table=None, targets=TARGETS, **kw):
    pred = _Pred(table or {t.id: t.quality_prior for t in targets}, **kw)
    return StaticView(targets, LatencyEstimator(targets), pred)


def _pick(weight, table=None, **constraints):
    return Utility(UtilityConfig(cost_weight=weight)).decide(req(**constraints), _view(table))


def test_cost_weight_trades_quality_for_price():
    # Utility per target = q - w * 0.228 * price: w = 0 -> best quality; large w -> cheapest.
    assert _pick(0.0).target == "big"
    assert _pick(0.05).target == "big"  # 0.9 - 0.114 > 0.7 - 0.023
    assert _pick(0.2).target == "mid"  # 0.9 - 0.456 < 0.7 - 0.091 > 0.5 - 0.046
    assert _pick(5.0).target == "cheap"
    d = _pick(0.2)
    assert d.outcome == "route" and d.reason == "utility"
    assert d.alternates == ("cheap", "big")  # the others by utility: 0.454 > 0.444
    assert d.predicted_quality == 0.7


def test_equal_quality_goes_to_the_cheaper_target_at_any_weight():
    table = {"big": 0.8, "mid": 0.8, "cheap": 0.8}
    for w in (0.0, 1e-6, 0.3):
        assert _pick(w, table).target == "cheap", w
    # Exact ties in utility fall to price, then latency, then config order.
    assert _pick(0.0, {"big": 0.6, "mid": 0.9, "cheap": 0.6}).target == "mid"


def test_latency_and_cost_bounds_are_hard():
    # big is best and the weight is 0, but it breaks the latency bound: the best fitting target wins.
    d = _pick(0.0, max_latency_ms=1500)
    assert d.target == "mid" and d.outcome == "route"
    assert all(e.fits == (e.target != "big") for e in d.candidates)
    # A cost bound below big's and mid's price: cheap, whatever the weight.
    cap = CHEAP.expected_cost_usd(100, 64) * 1.01
    assert _pick(0.0, max_cost_usd=cap).target == "cheap"
    # The request's min_quality is a fit condition too.
    assert _pick(5.0, min_quality=0.65).target == "mid"
    # Nothing fits and no api fallback: reject (default) or best effort (configured).
    assert _pick(0.0, max_latency_ms=1.0).outcome == "reject"
    be = Utility(UtilityConfig(on_unsatisfiable="best_effort")).decide(req(max_latency_ms=1.0), _view())
    assert be.outcome == "best_effort" and be.target == "cheap"  # the fastest misses by the least


def test_unhealthy_and_disallowed_targets_are_never_chosen():
    view = _view()
    view.set_health("big", False)
    assert Utility(UtilityConfig(cost_weight=0.0)).decide(req(), view).target == "mid"
    d = _pick(0.0, allowed_targets=("cheap",))
    assert d.target == "cheap" and d.alternates == ()


def test_weight_from_the_request_budget_when_not_configured():
    pol = Utility(UtilityConfig(cost_weight=None, budget_penalty=0.1))
    # No budget: lambda = 0, best predicted quality.
    assert pol.decide(req(), _view()).target == "big"
    # Budget = big's cost: lambda = 0.1 / (1000 * budget); big loses 0.1, mid 0.02, cheap 0.01.
    budget = BIG.expected_cost_usd(100, 64)
    assert pol.decide(req(max_cost_usd=budget), _view()).target == "big"  # 0.8 > 0.68 > 0.49
    close = {"big": 0.75, "mid": 0.7, "cheap": 0.5}
    assert pol.decide(req(max_cost_usd=budget), _view(close)).target == "mid"  # 0.65 < 0.68


def test_abstains_to_the_strongest_prior_when_the_prompt_is_unfamiliar():
    table = {"big": 0.6, "mid": 0.2, "cheap": 0.95}  # per-prompt predictions say: cheap
    prior = {"big": 0.9, "mid": 0.7, "cheap": 0.5}
    cfg = UtilityConfig(cost_weight=0.0, abstain_below=0.5)
    familiar = Utility(cfg).decide(req(), _view(table, support=0.9, prior=prior))
    assert familiar.target == "cheap" and familiar.reason == "utility"
    strange = Utility(cfg).decide(req(), _view(table, support=0.1, prior=prior))
    assert strange.target == "big" and strange.reason == "utility:abstain"
    # Abstention keeps the hard bounds: the strongest *fitting* target.
    bounded = Utility(cfg).decide(req(max_latency_ms=1500), _view(table, support=0.1, prior=prior))
    assert bounded.target == "mid"
    # A predictor without support() never abstains.
    plain = StaticView(TARGETS, LatencyEstimator(TARGETS), PriorPredictor(table))
    assert Utility(cfg).decide(req(), plain).target == "cheap"


def test_parses_from_config():
    pol = build_policy(parse_policy({"name": "utility", "cost_weight": 0.2, "abstain_below": 0.3}))
    assert isinstance(pol, Utility) and pol.config.cost_weight == 0.2
    with pytest.raises(ValueError, match="cost_weight"):
        parse_policy({"name": "utility", "cost_weight": -1})
