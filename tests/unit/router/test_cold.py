"""Scale from zero in the live view and the ColdAware policy wrapper (no Ray): states, wake-ups, the
cold-start cost in predicted latency (prior, then measured), and where requests go meanwhile."""

from __future__ import annotations

from typing import Any

from policies.cheapest_fit import CheapestFit
from policies.latency import LatencyEstimator
from policies.predictors import PriorPredictor
from policies.types import Constraints, LatencyPrior, RouteRequest, Target
from router.cold import ColdAware
from router.view import LiveView

LAT = LatencyPrior(ttft_ms=50, tpot_ms=10, max_concurrency=8)
CHEAP = Target(id="cheap", kind="local", input_price_per_mtok=0.01, output_price_per_mtok=0.02,
               quality_prior=0.5, latency=LAT)
DEAR = Target(id="dear", kind="local", input_price_per_mtok=0.1, output_price_per_mtok=0.2,
              quality_prior=0.5, latency=LAT)
API = Target(id="api", kind="api", input_price_per_mtok=1, output_price_per_mtok=2, quality_prior=0.9,
             latency=LAT)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _view(targets: list[Target], clock: Clock, woken: list[str]) -> LiveView:
    view = LiveView(targets, LatencyEstimator(targets), PriorPredictor({t.id: t.quality_prior for t in targets}),
                    clock=clock, cold_start_s={"cheap": 30.0})
    view.set_waker(woken.append)
    return view


def _req(**c: Any) -> RouteRequest:
    return RouteRequest(prompt="hi", prompt_tokens=5, max_tokens=8, constraints=Constraints(**c))


def test_cold_model_is_woken_and_the_request_goes_to_a_warm_alternate() -> None:
    clock, woken = Clock(), []
    view = _view([CHEAP, DEAR], clock, woken)
    policy = ColdAware(CheapestFit(), ["cheap"])
    assert policy.decide(_req(max_latency_ms=2000), view).target == "cheap"  # warm: the cheapest
    view.set_scale_state("cheap", "cold")
    assert view.state("cheap") == "cold" and view.healthy("cheap")  # routable, but only by waiting
    d = policy.decide(_req(max_latency_ms=2000), view)
    assert d.target == "dear" and d.reason == "cheapest-fit+waking:cheap" and "cheap" not in d.alternates
    assert woken == ["cheap"] and view.state("cheap") == "warming"
    policy.decide(_req(max_latency_ms=2000), view)
    assert woken == ["cheap"]  # one wake-up at a time
    # The wake-up call returns after 12 s: healthy again, measured cold start replaces the prior.
    clock.t += 12
    view.woke("cheap", ok=True)
    assert view.state("cheap") == "healthy" and view.cold_start("cheap") == {"seconds": 12.0, "measured": 1}
    assert policy.decide(_req(max_latency_ms=2000), view).target == "cheap"


def test_cold_start_is_in_the_predicted_latency_prior_then_measured() -> None:
    clock, woken = Clock(), []
    view = _view([CHEAP, DEAR], clock, woken)
    warm_ttft, warm_e2e = view.latency.predict(CHEAP, 5, 8)
    view.set_scale_state("cheap", "cold")
    ttft, e2e = view.latency.predict(CHEAP, 5, 8)
    assert ttft - warm_ttft == 30_000 and e2e - warm_e2e == 30_000  # the 30 s prior
    assert view.raw_latency.predict(CHEAP, 5, 8) == (warm_ttft, warm_e2e)
    assert view.latency.predict(DEAR, 5, 8)[0] < 1000  # others unaffected
    view.wake("cheap")
    clock.t += 20
    assert view.latency.predict(CHEAP, 5, 8)[0] - warm_ttft == 10_000  # 10 s of the 30 left
    clock.t += 30  # overdue: still a fifth of the estimate, not "ready now"
    assert view.latency.predict(CHEAP, 5, 8)[0] - warm_ttft == 6_000
    view.woke("cheap", ok=True)  # took 50 s
    view.set_scale_state("cheap", "cold")  # scaled to zero again later
    assert view.latency.predict(CHEAP, 5, 8)[0] - warm_ttft == 50_000
    view.wake("cheap")
    clock.t += 10
    view.woke("cheap", ok=True)
    assert view.cold_start("cheap") == {"seconds": 30.0, "measured": 2}  # halfway from 50 to 10


def test_without_a_warm_fit_the_request_waits_for_the_cold_model_if_its_bound_allows() -> None:
    clock, woken = Clock(), []
    view = _view([CHEAP], clock, woken)
    policy = ColdAware(CheapestFit(), ["cheap"])
    view.set_scale_state("cheap", "cold")
    # No bound: nothing warm, so it goes to the cold model (the call itself wakes it too).
    d = policy.decide(_req(), view)
    assert d.target == "cheap" and d.outcome == "route" and d.reason.endswith("+cold-start")
    # A bound the 30 s start-up cannot meet: not routed there (reject, as cheapest-fit does without api).
    view2 = _view([CHEAP], Clock(), [])
    view2.set_scale_state("cheap", "cold")
    d2 = policy.decide(_req(max_latency_ms=2000), view2)
    assert d2.target != "cheap"


def test_cold_model_with_api_fallback_serves_from_the_api_meanwhile() -> None:
    clock, woken = Clock(), []
    view = _view([CHEAP, API], clock, woken)
    policy = ColdAware(CheapestFit(), ["cheap"])
    view.set_scale_state("cheap", "cold")
    d = policy.decide(_req(max_latency_ms=2000), view)
    assert d.target == "api" and woken == ["cheap"]


def test_a_call_sent_to_a_cold_model_counts_as_its_wake_up() -> None:
    clock, woken = Clock(), []
    view = _view([CHEAP, DEAR], clock, woken)
    view.set_scale_state("cheap", "cold")
    ticket = view.started("cheap")  # e.g. a request pinned to it
    assert woken == ["cheap"] and view.state("cheap") == "warming"
    view.finished("cheap", ticket)
    view.woke("cheap", ok=False)  # a failed wake-up leaves the state to the poll
    assert view.state("cheap") == "cold" and view.cold_start("cheap")["measured"] == 0


def test_no_cold_target_means_one_plain_decision() -> None:
    calls = []

    class Counting(CheapestFit):
        def decide(self, request, view):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().decide(request, view)

    view = _view([CHEAP, DEAR], Clock(), [])
    policy = ColdAware(Counting(), ["cheap"])
    policy.decide(_req(), view)
    assert len(calls) == 1
    assert policy.name == "cheapest-fit"  # attributes pass through (service reads `accept` this way)
