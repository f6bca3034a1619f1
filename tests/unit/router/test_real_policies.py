"""The service with helper-built policies from policies/ (cheapest-fit, cascade) instead of test fakes."""

from __future__ import annotations

import openai
import pytest

from policies.cascade import CascadeConfig
from policies.cheapest_fit import CheapestFitConfig
from policies.config import build_policy
from policies.predictors.prior import PriorPredictor
from tests.unit.router.fakes import FakeTarget, Rig


def _rig(policy_cfg: object, **fakes: FakeTarget) -> Rig:
    return Rig({t: fakes.get(t) or FakeTarget(t) for t in ("small", "big", "api")},
               policy=build_policy(policy_cfg), quality=PriorPredictor())  # type: ignore[arg-type]


async def test_cheapest_fit_routes_and_honours_constraints() -> None:
    rig = _rig(CheapestFitConfig())
    client = rig.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    assert raw.headers["x-router-target"] == "small"
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=16,
        extra_body={"routing": {"min_quality": 0.9}},
    )
    assert raw.headers["x-router-target"] == "api"
    with pytest.raises(openai.UnprocessableEntityError, match="min_quality"):
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=16,
            extra_headers={"x-router-min-quality": "0.9", "x-router-allow-fallback": "false"},
        )


async def test_cheapest_fit_unsatisfiable_is_422() -> None:
    rig = _rig(CheapestFitConfig())
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "x"}],
            "routing": {"min_quality": 0.9, "allow_fallback": False}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "constraints_unsatisfiable"


async def test_cascade_policy_escalates_on_low_logprob() -> None:
    weak, strong = FakeTarget("small", logprob=-6.0), FakeTarget("big", logprob=-0.05)
    rig = _rig(CascadeConfig(), small=weak, big=strong)
    raw = await rig.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hard question"}], max_tokens=16
    )
    assert raw.headers["x-router-reason"].endswith("+escalated")
    assert raw.headers["x-router-target"] != "small"
