"""Attempt timeouts come from the request (predicted latency for its max_tokens) and the request's one
deadline (`limits.request_timeout_s`) is shared by all its attempts; timeouts the deadline caused do not
count against the target."""

from __future__ import annotations

import asyncio

import pytest

from router.limits import LimitsConfig
from tests.unit.router.fakes import FakeTarget, Rig, chat_body


def _slow_rig(delay_s: float, limits: LimitsConfig) -> Rig:
    return Rig({t: FakeTarget(t, delay_s=delay_s) for t in ("small", "big", "api")}, limits=limits)


@pytest.mark.parametrize("stream", [False, True])
async def test_deadline_is_shared_by_all_attempts(stream: bool) -> None:
    # Every target hangs: the request gets one 504 at its deadline, not one full timeout per attempt.
    limits = LimitsConfig(request_timeout_s=0.6, attempt_timeout_floor_s=0.4, attempt_timeout_factor=0.001)
    rig = _slow_rig(30, limits)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=stream))
    took = loop.time() - t0
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert 0.5 < took < 1.5, took
    assert len(rig.fakes["small"].calls) == 1 and len(rig.fakes["big"].calls) == 1
    assert not rig.fakes["api"].calls  # no time was left for a third attempt


async def test_attempt_limit_follows_max_tokens() -> None:
    # 'small' answers in 1.0 s. With max_tokens 1 the predicted e2e is ~0.3 s and the factor-2 limit
    # (floor 0.05 s) cuts the attempt; with max_tokens 400 (16 s predicted at 40 ms/token) it waits.
    limits = LimitsConfig(request_timeout_s=30, attempt_timeout_floor_s=0.05, attempt_timeout_factor=2)
    rig = Rig({"small": FakeTarget("small", delay_s=1.0), "big": FakeTarget("big"), "api": FakeTarget("api")},
              limits=limits)
    async with rig.http() as http:
        short = await http.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        long = await http.post("/v1/chat/completions", json=chat_body(max_tokens=400))
    assert short.status_code == 200 and short.headers["x-router-target"] == "big"
    assert long.status_code == 200 and long.headers["x-router-target"] == "small"


async def test_deadline_bound_timeouts_do_not_cool_the_target_down() -> None:
    # The request's own deadline (shorter than anything the target could do) is the request's doing.
    limits = LimitsConfig(request_timeout_s=0.2, attempt_timeout_floor_s=5)
    rig = Rig({"small": FakeTarget("small", delay_s=1.0), "big": FakeTarget("big"), "api": FakeTarget("api")},
              limits=limits)
    async with rig.http() as http:
        for _ in range(5):
            r = await http.post("/v1/chat/completions", json=chat_body(model="small"))
            assert r.status_code == 504
    assert rig.view.state("small") == "healthy"


async def test_target_overrunning_its_own_limit_counts() -> None:
    limits = LimitsConfig(request_timeout_s=10, attempt_timeout_floor_s=0.05, attempt_timeout_factor=0.001)
    rig = Rig({"small": FakeTarget("small", delay_s=5.0), "big": FakeTarget("big"), "api": FakeTarget("api")},
              limits=limits)
    async with rig.http() as http:
        for _ in range(3):
            r = await http.post("/v1/chat/completions", json=chat_body())
            assert r.status_code == 200 and r.headers["x-router-target"] == "big"
    assert rig.view.state("small") == "cooling_down"
