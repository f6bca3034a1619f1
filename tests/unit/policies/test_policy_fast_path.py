"""The untraced decision (`RouteRequest.explain=False`: no per-candidate Estimates) chooses exactly what
the traced one does, for every built-in policy over random clusters, live latency state and predictions;
and the batched latency prediction never bypasses a latency view's own `predict`."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.base import StaticView
from policies.config import build_policy, parse_policy
from policies.estimates import estimate, predict_all, why_not
from policies.latency import LatencyEstimator
from policies.predictors import PriorPredictor
from policies.types import Estimate, LatencyPrior
from tests.unit.policies.helpers import TARGETS, req, target, view
from tests.unit.policies.test_policy_cheapest_fit import clusters

POLICIES = [
    {"name": "cheapest-fit"},
    {"name": "cheapest-fit", "on_unsatisfiable": "best_effort", "min_quality": 0.5},
    {"name": "cheapest-fit", "unbounded_reserve": None, "max_alternates": 1},
    {"name": "utility"},
    {"name": "utility", "cost_weight": None, "on_unsatisfiable": "best_effort"},
    {"name": "utility", "cost_weight": 0.0, "abstain_below": 0.5},
    {"name": "cascade"},
    {"name": "cascade", "chain": ["t2", "t0", "t1"]},
    {"name": "always", "target": "t0"},
    {"name": "always-cheapest"},
    {"name": "always-strongest"},
    {"name": "random", "seed": 3},
    {"name": "round-robin"},
    {"name": "quality-threshold", "strong": "t1", "weak": "t0"},
    {"name": "quality-threshold", "strong": "t0", "weak": "t1", "score": "win-rate", "threshold": 0.3},
]


class _Predictor(PriorPredictor):
    """A prior table with a support figure, so utility's abstention branch is reachable."""

    def __init__(self, table, support):  # type: ignore[no-untyped-def]
        super().__init__(table)
        self._support = support

    def support(self, prompt):  # type: ignore[no-untyped-def]
        return self._support


@st.composite
def live_states(draw):
    targets, _, request, est = draw(clusters())
    for t in targets:  # observations: some targets past min_samples (live sketches), some on the prior
        for _ in range(draw(st.sampled_from([0, 3, 12]))):
            est.observe(t.id, draw(st.floats(1, 3000)), draw(st.floats(0, 100)), draw(st.integers(1, 600)))
    table = {t.id: draw(st.floats(0, 1)) for t in targets if draw(st.booleans())}
    health = {t.id: draw(st.booleans()) or draw(st.booleans()) for t in targets}
    v = StaticView(targets, est, _Predictor(table, draw(st.floats(0, 1))), health)
    return targets, v, request


def _reference(request, v, tid, min_quality) -> Estimate:  # type: ignore[no-untyped-def]
    """The candidate's Estimate computed target by target, the way estimates were built before
    (`min_quality`: a policy's configured bound, for requests that set none)."""
    t = next(t for t in v.targets if t.id == tid)
    c = request.constraints
    if c.min_quality is None and min_quality is not None:
        c = c.model_copy(update={"min_quality": min_quality})
    q = v.quality.predict(request.prompt, [t])[t.id]
    ttft, e2e = v.latency.predict(t, request.prompt_tokens, request.output_tokens)
    cost = t.expected_cost_usd(request.prompt_tokens, request.output_tokens)
    bad = why_not(c, q, ttft if c.latency_metric == "ttft" else e2e, cost)
    return Estimate(target=tid, quality=q, ttft_ms=ttft, e2e_ms=e2e, cost_usd=cost, fits=bad is None, why_not=bad)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(live_states(), st.sampled_from(POLICIES))
def test_untraced_decision_equals_traced(state, cfg):
    targets, v, request = state
    if any(t not in {x.id for x in targets} for t in (cfg.get("target"), cfg.get("strong"), cfg.get("weak"))
           if t is not None):
        cfg = {"name": "always-cheapest"}  # the policy's targets are not in this cluster
    traced = build_policy(parse_policy(cfg)).decide(request, v)
    fast = build_policy(parse_policy(cfg)).decide(request.model_copy(update={"explain": False}), v)
    assert fast.candidates == ()
    assert fast.model_dump(exclude={"candidates"}) == traced.model_dump(exclude={"candidates"})
    for e in traced.candidates:
        assert e == _reference(request, v, e.target, cfg.get("min_quality"))


def test_traced_decision_lists_every_candidate():
    d = build_policy(parse_policy({"name": "cheapest-fit"})).decide(req(min_quality=0.6), view())
    assert [e.target for e in d.candidates] == ["small", "mid", "gpt"]
    assert build_policy(parse_policy({"name": "cheapest-fit"})).decide(
        req(min_quality=0.6).model_copy(update={"explain": False}), view()).candidates == ()


def test_predict_many_matches_predict_under_load():
    ts = [target(f"t{i}", latency=LatencyPrior(ttft_ms=50 + i, tpot_ms=5, max_concurrency=2)) for i in range(5)]
    est = LatencyEstimator(ts)
    for i, t in enumerate(ts):
        for _ in range(3 * i):  # t0 idle ... t4 queueing (12 in flight on 2 slots)
            est.started(t.id)
        for j in range(10 * (i % 2)):
            est.observe(t.id, 40.0 + j, 4.0 + j / 10, 50)
    assert est.predict_many(ts, 300, 64) == [est.predict(t, 300, 64) for t in ts]
    assert est.load("t4") > 1  # the queueing branch is on the path


class _Wrapper:
    """A latency view that adds to the estimator's predictions and forwards everything else."""

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self._inner = inner

    def predict(self, target, prompt_tokens, output_tokens):  # type: ignore[no-untyped-def]
        ttft, e2e = self._inner.predict(target, prompt_tokens, output_tokens)
        return ttft + 1000.0, e2e + 1000.0

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)


class _Slower(LatencyEstimator):
    def predict(self, target, prompt_tokens, output_tokens):  # type: ignore[no-untyped-def]
        ttft, e2e = super().predict(target, prompt_tokens, output_tokens)
        return 2 * ttft, 2 * e2e


def test_batched_prediction_never_bypasses_a_views_own_predict():
    est = LatencyEstimator(TARGETS)
    plain = predict_all(est, TARGETS, 100, 64)
    assert predict_all(_Wrapper(est), TARGETS, 100, 64) == [(a + 1000.0, b + 1000.0) for a, b in plain]
    slower = _Slower(TARGETS)
    assert predict_all(slower, TARGETS, 100, 64) == [(2 * a, 2 * b) for a, b in plain]
    v = StaticView(TARGETS, _Wrapper(est), PriorPredictor())
    assert [e.ttft_ms for e in estimate(req(), v, TARGETS)] == [a + 1000.0 for a, _ in plain]
