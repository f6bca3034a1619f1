"""The cascade-policy protocol (policies/base.py): which policies the router escalates for."""

from __future__ import annotations

from policies.base import EscalatingPolicy, Policy
from policies.cascade import Cascade
from policies.cheapest_fit import CheapestFit
from router.cold import ColdAware


def test_cascade_is_an_escalating_policy_and_cheapest_fit_is_not() -> None:
    assert isinstance(Cascade(), EscalatingPolicy)
    assert isinstance(CheapestFit(), Policy) and not isinstance(CheapestFit(), EscalatingPolicy)


def test_the_cold_start_wrapper_keeps_what_it_wraps() -> None:
    assert isinstance(ColdAware(Cascade(), ["a"]), EscalatingPolicy)
    assert not isinstance(ColdAware(CheapestFit(), ["a"]), EscalatingPolicy)
    assert ColdAware(Cascade(), []).accept("a long enough answer, nothing refused") is True
    assert ColdAware(Cascade(), []).accept("ok") is False  # shorter than min_answer_chars
