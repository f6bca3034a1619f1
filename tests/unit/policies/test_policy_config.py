"""Config validation and the builders."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.base import Policy
from policies.baselines import RoundRobin
from policies.config import (
    CheapestFitConfig,
    LatencyConfig,
    LogisticQualityConfig,
    PriorQualityConfig,
    build_latency,
    build_policy,
    build_quality,
    parse_policy,
    parse_quality,
)
from policies.registry import registered
from tests.unit.policies.helpers import TARGETS, req, view

ALL = [
    {"name": "cheapest-fit", "on_unsatisfiable": "best_effort"},
    {"name": "utility", "cost_weight": 0.1},
    {"name": "cascade", "chain": ["small", "gpt"]},
    {"name": "always", "target": "mid"},
    {"name": "always-cheapest"},
    {"name": "always-strongest"},
    {"name": "random", "seed": 1},
    {"name": "round-robin"},
    {"name": "quality-threshold", "strong": "gpt", "weak": "small", "threshold": 0.4},
]


@pytest.mark.parametrize("data", ALL, ids=[d["name"] for d in ALL])
def test_every_policy_builds_and_decides(data):
    policy = build_policy(parse_policy(data))
    assert isinstance(policy, Policy) and policy.name == data["name"]
    d = policy.decide(req(), view())
    assert d.target in {"small", "mid", "gpt"}
    assert policy.decide(req(), view()).target == d.target or data["name"] == "round-robin"


def test_all_registered_policies_are_in_the_union():
    assert set(registered()) == {d["name"] for d in ALL}


def test_every_config_field_has_a_description():
    for cfg_cls, _ in registered().values():
        for fname, f in cfg_cls.model_fields.items():
            assert f.description, f"{cfg_cls.__name__}.{fname}"
    for cls in (LatencyConfig, PriorQualityConfig, LogisticQualityConfig):
        assert all(f.description for f in cls.model_fields.values()), cls


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"name": "cheapest"}, "cheapest"),
        ({"name": "cheapest-fit", "max_quality": 1}, "max_quality"),
        ({"name": "cheapest-fit", "on_unsatisfiable": "maybe"}, "on_unsatisfiable"),
        ({"name": "always"}, "target"),
        ({"name": "quality-threshold", "strong": "a", "weak": "b", "threshold": 2}, "threshold"),
        ({}, "name"),
    ],
)
def test_policy_config_errors(data, fragment):
    with pytest.raises(ValidationError) as e:
        parse_policy(data)
    assert fragment in str(e.value)


def test_quality_and_latency_config_errors():
    with pytest.raises(ValidationError):
        parse_quality({"kind": "svm"})
    with pytest.raises(ValidationError):
        parse_quality({"kind": "knn"})  # artifact required
    with pytest.raises(ValidationError):
        parse_quality({"kind": "prior", "tabel": {}})
    with pytest.raises(ValidationError):
        LatencyConfig(quantile=1.2)
    with pytest.raises(ValidationError):
        LatencyConfig(decay=0.5)  # type: ignore[call-arg]


def test_configs_are_frozen():
    cfg = CheapestFitConfig()
    with pytest.raises(ValidationError):
        cfg.max_alternates = 5  # type: ignore[misc]


def test_build_quality_prior_and_latency():
    q = build_quality(parse_quality({"kind": "prior", "table": {"small": 0.1}}), TARGETS)
    assert q.predict("x", TARGETS)["small"] == 0.1
    with pytest.raises(ValueError, match="unknown targets"):
        build_quality(PriorQualityConfig(table={"nope": 0.1}), TARGETS)
    lat = build_latency(LatencyConfig(quantile=0.95), TARGETS)
    assert lat.predict(TARGETS[0], 10, 10)[0] > 0


def test_build_policy_rejects_non_config():
    with pytest.raises(TypeError):
        build_policy(PriorQualityConfig())
    assert isinstance(build_policy(parse_policy({"name": "round-robin"})), RoundRobin)


def test_every_policy_names_a_sweep_knob_that_is_one_of_its_fields():
    from policies.registry import sweep_of

    for name, (cfg_cls, _) in registered().items():
        knob, grid = sweep_of(cfg_cls)
        if knob is None:
            assert grid == (), name
            continue
        assert knob in cfg_cls.model_fields, name
        assert len(grid) >= 10 and list(grid) == sorted(grid), name
        # Every grid value is a valid setting of the knob.
        base = {"strong": "gpt", "weak": "small"} if name == "quality-threshold" else {}
        for v in (grid[0], grid[-1]):
            assert getattr(parse_policy({"name": name, **base, knob: v}), knob) == v
    assert sweep_of(CheapestFitConfig)[0] == "min_quality"
    assert sweep_of(parse_policy({"name": "utility"}))[0] == "cost_weight"


def test_cheapest_fit_config_min_quality_applies_only_when_the_request_sets_none():
    strict = build_policy(parse_policy({"name": "cheapest-fit", "min_quality": 0.6}))
    assert strict.decide(req(), view()).target == "mid"  # small's prior 0.4 < 0.6
    assert strict.decide(req(min_quality=0.3), view()).target == "small"  # the request's bound wins
    assert build_policy(parse_policy({"name": "cheapest-fit"})).decide(req(), view()).target == "small"
