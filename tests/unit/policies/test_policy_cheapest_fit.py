"""cheapest-fit: properties over random clusters and constraints, plus the named cases."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.base import StaticView
from policies.cheapest_fit import CheapestFit, CheapestFitConfig
from policies.estimates import violation
from policies.latency import LatencyEstimator
from policies.predictors import PriorPredictor
from policies.types import Constraints, LatencyPrior, RouteRequest, Target
from tests.unit.policies.helpers import TARGETS, req, view


@st.composite
def clusters(draw):
    n = draw(st.integers(1, 6))
    targets = []
    for i in range(n):
        targets.append(
            Target(
                id=f"t{i}",
                kind=draw(st.sampled_from(["local", "local", "api"])),
                input_price_per_mtok=draw(st.sampled_from([0.0, 0.05, 0.1, 1.0, 3.0])),
                output_price_per_mtok=draw(st.sampled_from([0.0, 0.1, 0.2, 2.0, 10.0])),
                context_window=draw(st.sampled_from([512, 2048, 8192])),
                quality_prior=draw(st.floats(0, 1)),
                latency=LatencyPrior(
                    ttft_ms=draw(st.floats(10, 2000)),
                    tpot_ms=draw(st.floats(1, 80)),
                    max_concurrency=draw(st.integers(1, 4)),
                ),
            )
        )
    health = {t.id: draw(st.booleans()) or draw(st.booleans()) for t in targets}
    est = LatencyEstimator(targets)
    for t in targets:  # some live load, so queueing enters the predictions
        for _ in range(draw(st.integers(0, 8))):
            est.started(t.id)
    view = StaticView(targets, est, PriorPredictor(), health)
    c = Constraints(
        max_latency_ms=draw(st.none() | st.floats(100, 20000)),
        latency_metric=draw(st.sampled_from(["ttft", "e2e"])),
        min_quality=draw(st.none() | st.floats(0, 1)),
        max_cost_usd=draw(st.none() | st.floats(0, 0.01)),
        allow_fallback=draw(st.booleans()),
        allowed_targets=draw(
            st.none() | st.lists(st.sampled_from([t.id for t in targets]), unique=True).map(tuple)
        ),
    )
    request = RouteRequest(
        prompt=draw(st.text(max_size=20)),
        prompt_tokens=draw(st.integers(0, 3000)),
        expected_output_tokens=draw(st.integers(1, 2000)),
        max_tokens=draw(st.none() | st.integers(1, 4000)),
        constraints=c,
    )
    return targets, view, request, est


def _oracle(targets, view, request, est):
    """Independent restatement of eligibility and fit."""
    c = request.constraints
    out = {}
    for t in targets:
        if c.allowed_targets is not None and t.id not in c.allowed_targets:
            continue
        if not view.healthy(t.id) or (t.kind == "api" and not c.allow_fallback):
            continue
        if t.context_window < request.prompt_tokens + request.output_tokens:
            continue
        ttft, e2e = est.predict(t, request.prompt_tokens, request.output_tokens)
        lat = ttft if c.latency_metric == "ttft" else e2e
        cost = t.expected_cost_usd(request.prompt_tokens, request.output_tokens)
        ok = (
            (c.min_quality is None or t.quality_prior >= c.min_quality)
            and (c.max_latency_ms is None or lat <= c.max_latency_ms)
            and (c.max_cost_usd is None or cost <= c.max_cost_usd)
        )
        out[t.id] = (ok, cost, t)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.sampled_from(["reject", "best_effort"]))
def test_cheapest_fit_properties(cluster, on_unsat):
    targets, view, request, est = cluster
    policy = CheapestFit(CheapestFitConfig(on_unsatisfiable=on_unsat))
    d = policy.decide(request, view)
    oracle = _oracle(targets, view, request, est)
    satisfying = {tid: cost for tid, (ok, cost, _) in oracle.items() if ok}

    # Deterministic for equal inputs and state.
    assert policy.decide(request, view) == d
    # Alternates never repeat the chosen target, nor each other, and are eligible.
    assert d.target not in d.alternates
    assert len(set(d.alternates)) == len(d.alternates)
    assert set(d.alternates) <= set(oracle)
    assert d.reason
    if satisfying:
        assert d.outcome == "route"
        assert d.target in satisfying
        limit = 1.0 - policy.config.unbounded_reserve
        roomy = {tid: cost for tid, cost in satisfying.items() if est.load(tid) < limit}
        if d.reason == "cheapest-fit:spill":
            # An unbounded request skips loaded targets: the cheapest one is loaded, the chosen one is
            # the cheapest of those with room.
            assert request.constraints.max_latency_ms is None
            assert est.load(d.target) < limit and satisfying[d.target] <= min(roomy.values())
            assert any(est.load(t) >= limit and c <= satisfying[d.target] for t, c in satisfying.items())
        else:
            assert d.reason == "cheapest-fit"
            assert satisfying[d.target] <= min(satisfying.values())
            cheapest_loaded = est.load(d.target) >= limit
            assert not (request.constraints.max_latency_ms is None and cheapest_loaded and roomy)
    else:
        assert d.outcome in ("fallback", "reject", "best_effort")
        if d.outcome == "fallback":
            assert oracle[d.target][2].kind == "api" and request.constraints.allow_fallback
            assert d.reason.startswith("no-local-fits:")
        elif d.outcome == "reject":
            assert d.target is None
        else:
            assert on_unsat == "best_effort" and d.target in oracle
            # Past an eligible api fallback only for a local that misses by less.
            api = [e for e in d.candidates if oracle[e.target][2].kind == "api"]
            if api:
                chosen = next(e for e in d.candidates if e.target == d.target)
                assert oracle[d.target][2].kind == "local"
                assert violation(chosen, request.constraints) < violation(api[0], request.constraints)
    if d.outcome == "route":  # a route never hides a violation
        assert oracle[d.target][0]
    if d.target is not None:
        assert d.target in oracle  # never an ineligible target
    est_ids = [e.target for e in d.candidates]
    assert sorted(est_ids) == sorted(oracle)


def test_picks_cheapest_that_meets_quality():
    d = CheapestFit().decide(req(min_quality=0.6), view())
    assert (d.target, d.outcome, d.reason) == ("mid", "route", "cheapest-fit")
    assert d.alternates == ("gpt",)
    assert {e.target for e in d.candidates} == {"small", "mid", "gpt"}


def test_fallback_names_why_locals_failed():
    d = CheapestFit().decide(req(min_quality=0.95), view())
    assert (d.target, d.outcome, d.reason) == ("gpt", "fallback", "no-local-fits:min_quality")


def test_unhealthy_and_disallowed_targets_are_skipped():
    d = CheapestFit().decide(req(min_quality=0.6), view(health={"mid": False}))
    assert d.target == "gpt" and d.outcome == "route"
    d = CheapestFit().decide(req(allowed_targets=("mid",)), view())
    assert d.target == "mid" and d.alternates == ()


def test_no_fallback_reject_or_best_effort():
    d = CheapestFit().decide(req(min_quality=0.95, allow_fallback=False), view())
    assert d.outcome == "reject" and d.target is None and d.reason == "unsatisfiable:min_quality"
    be = CheapestFit(CheapestFitConfig(on_unsatisfiable="best_effort"))
    d = be.decide(req(min_quality=0.95, allow_fallback=False), view())
    assert (d.outcome, d.target) == ("best_effort", "mid")  # 0.7 misses 0.95 by less than 0.4 does


def test_context_window_excludes():
    d = CheapestFit().decide(req(tokens=5000, allow_fallback=False), view())
    assert d.outcome == "reject" and d.reason == "unsatisfiable:context_window"


def test_latency_bound_uses_metric():
    # small: ttft p90 75 ms; with 200 output tokens e2e is ~3 s.
    d = CheapestFit().decide(req(out=200, max_latency_ms=500, latency_metric="ttft"), view())
    assert d.target == "small"
    d = CheapestFit().decide(req(out=200, max_latency_ms=500, latency_metric="e2e"), view())
    assert d.outcome == "fallback" and d.reason == "no-local-fits:max_latency_ms"


def test_ties_break_on_latency_then_order():
    from tests.unit.policies.helpers import target

    ts = [
        target("a", latency=LatencyPrior(ttft_ms=300)),
        target("b", latency=LatencyPrior(ttft_ms=100)),
        target("c", latency=LatencyPrior(ttft_ms=100)),
    ]
    d = CheapestFit().decide(req(), view(ts))
    assert d.target == "b" and d.alternates == ("c", "a")


def _loaded(n_small: int):
    """The helpers' cluster with `n_small` requests in flight on 'small' (8 slots: 1 replica x 8)."""
    v = view()
    for _ in range(n_small):
        v.latency.started("small")
    return v


def test_unbounded_request_spills_off_a_loaded_cheap_target():
    v = _loaded(8)  # every slot of 'small' busy: the next request would queue
    d = CheapestFit().decide(req(), v)
    assert (d.target, d.outcome, d.reason) == ("mid", "route", "cheapest-fit:spill")
    assert d.alternates[0] == "small"
    # A latency-bounded request that 'small' still meets keeps the cheapest target.
    assert CheapestFit().decide(req(max_latency_ms=60_000), v).target == "small"
    # Disabled: cheapest regardless of load.
    assert CheapestFit(CheapestFitConfig(unbounded_reserve=None)).decide(req(), v).target == "small"


def test_unbounded_request_stays_while_cheap_target_has_room_or_nothing_else_has():
    assert CheapestFit().decide(req(), _loaded(7)).target == "small"  # 7/8 < 0.95
    v = _loaded(8)
    for _ in range(8):
        v.latency.started("mid")
    v.latency.started("gpt")  # gpt: 1/8, below the limit
    assert CheapestFit().decide(req(), v).target == "gpt"
    for _ in range(7):
        v.latency.started("gpt")
    d = CheapestFit().decide(req(), v)
    assert (d.target, d.reason) == ("small", "cheapest-fit")  # all loaded: cheapest


def test_latency_miss_goes_best_effort_to_a_local_that_misses_less_than_the_api():
    v = _loaded(10)  # 'small' queues, so it misses a tight e2e bound, but by less than the slower api
    small, gpt = (v.latency.predict(t, 100, 64)[1] for t in (TARGETS[0], TARGETS[2]))
    assert small < gpt
    bound = 0.9 * small
    d = CheapestFit(CheapestFitConfig(on_unsatisfiable="best_effort")).decide(req(max_latency_ms=bound), v)
    assert (d.target, d.outcome) == ("small", "best_effort") and d.reason.startswith("best-effort:")
    assert "gpt" in d.alternates
    # reject mode keeps the api fallback (an answer that misses beats none there).
    d = CheapestFit().decide(req(max_latency_ms=bound), v)
    assert (d.target, d.outcome) == ("gpt", "fallback")
    # A quality miss still falls back to the api, which misses it by less.
    d = CheapestFit(CheapestFitConfig(on_unsatisfiable="best_effort")).decide(req(min_quality=0.95), v)
    assert (d.target, d.outcome) == ("gpt", "fallback")
