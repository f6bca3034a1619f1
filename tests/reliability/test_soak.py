"""A bounded soak at a steady rate with accounting and an ingress-replica memory / connection bound, and
a config reload (`serve.run` of a changed app) with non-streaming requests in flight.

The app has two fast fake engines and one real vLLM CPU engine (SmolLM2 from cluster.yaml); one in 40 of
the soak's requests are pinned to the real one (it is priced above the fakes so `auto` goes to them).

SOAK_SECONDS (default 60) sets the soak length; RELIABILITY.md reports a 300 s run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import httpx
import psutil
import pytest

from tests.reliability.harness import build_app, chat, deploy, model, ray_serve, real_model, record, steady_load

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8230
BASE = f"http://127.0.0.1:{PORT}"
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "20"))
RSS_GROWTH_BOUND_MB = 60


def soak_config(timeout_s: float = 10) -> dict:
    return {"models": [model("fast-a", 0.01, 0.5), model("fast-b", 0.02, 0.6), REAL],
            "limits": {"request_timeout_s": timeout_s}}


REAL = real_model("smollm2-135m", input_price_per_mtok=0.5, output_price_per_mtok=1.0)


ENGINES = {"fast-a": {"ttft_s": 0.02, "token_delay_s": 0.005},
           "fast-b": {"ttft_s": 0.03, "token_delay_s": 0.005}}


@pytest.fixture(scope="module")
def soak_app():
    with ray_serve(PORT):
        yield deploy("soak", soak_config(), ENGINES)


def _ingress() -> psutil.Process:
    found = [p for p in psutil.process_iter(["cmdline"])
             if any("ServeReplica:soak:router" in part for part in (p.info["cmdline"] or []))]
    assert len(found) == 1, found
    return found[0]


def test_soak(soak_app):
    path = soak_app + "/v1/chat/completions"
    fakes = [chat("soak request", max_tokens=8), chat("soak stream", stream=True, max_tokens=8),
             chat("soak quality", routing={"min_quality": 0.55}), chat("soak pinned", model="fast-a")]
    real = [chat("What is the capital of France?", model=REAL["id"], max_tokens=4, temperature=0),
            chat("Name a colour.", model=REAL["id"], max_tokens=4, temperature=0, stream=True)]
    # 1 in 40 to the real engine (0.5 req/s at 20 req/s): what a 0.5-CPU SmolLM2 sustains with room to spare
    bodies = [*(fakes * 10)[:-1], real[0], *(fakes * 10)[:-1], real[1]]
    warm = asyncio.run(steady_load(BASE, path, bodies, rate=SOAK_RATE, duration_s=5))
    assert warm.lost == 0
    from ray import serve

    proc = _ingress()
    ingress = serve.get_deployment_handle("router", app_name="soak")
    tasks0 = ingress.stats.remote().result(timeout_s=30)["asyncio_tasks"]
    rss0 = proc.memory_info().rss
    conns0 = len(proc.net_connections())
    fds0 = proc.num_fds()
    samples = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5):
            samples.append(proc.memory_info().rss)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.monotonic()
    tally = asyncio.run(steady_load(BASE, path, bodies, rate=SOAK_RATE, duration_s=SOAK_SECONDS))
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    time.sleep(2)
    rss1 = proc.memory_info().rss
    conns1 = len(proc.net_connections())
    fds1 = proc.num_fds()
    tasks1 = ingress.stats.remote().result(timeout_s=30)["asyncio_tasks"]
    growth_mb = (rss1 - rss0) / 2**20
    record(f"soak {SOAK_SECONDS:.0f} s at {SOAK_RATE:g} req/s (2 fake engines + real SmolLM2 for 1/40)", tally,
           seconds=round(elapsed, 1), ingress_rss_mb=[round(rss0 / 2**20), round(rss1 / 2**20)],
           rss_peak_mb=round(max(samples + [rss1]) / 2**20), ingress_conns=[conns0, conns1],
           ingress_fds=[fds0, fds1], ingress_asyncio_tasks=[tasks0, tasks1])
    assert tally.lost == 0, (tally.row(), tally.problems[:5])
    assert tally.outcomes == {"ok": tally.sent}, tally.row()
    assert tally.targets[REAL["id"]] >= tally.sent // 40, tally.targets  # the real engine answered its share
    assert tally.sent >= 0.9 * SOAK_RATE * SOAK_SECONDS
    assert growth_mb < RSS_GROWTH_BOUND_MB, growth_mb
    assert conns1 <= conns0 + 10 and fds1 <= fds0 + 20, (conns0, conns1, fds0, fds1)
    assert tasks1 <= tasks0 + 5, (tasks0, tasks1)  # no request leaves a task behind


def test_reload_keeps_in_flight_requests(soak_app):
    """A redeploy while non-streaming requests are in flight. Serve replaces every unversioned deployment
    of the app on `serve.run` (the engines too: RELIABILITY.md, Findings), so requests that arrive while
    no model replica is RUNNING can get 503 `no_healthy_target` (with no provider configured here); the
    ones already in flight when the reload starts must all be answered, and nothing may be lost."""
    from ray import serve

    from tests.reliability.harness import Tally, send

    path = soak_app + "/v1/chat/completions"
    slow = {k: {**v, "ttft_s": 1.5} for k, v in ENGINES.items()}
    fakes_only = {**soak_config(), "models": soak_config()["models"][:2]}  # the real engine leaves here
    serve.run(build_app(fakes_only, slow), name="soak", route_prefix="/soak")
    reload_cfg = {**fakes_only, "limits": {"request_timeout_s": 11}}

    async def scenario() -> tuple[Tally, Tally]:
        before, during = Tally(), Tally()
        state = {"reloading": False}
        tasks: list[asyncio.Task] = []
        async with httpx.AsyncClient(base_url=BASE, limits=httpx.Limits(max_connections=100)) as c:
            async def generate() -> None:  # 8 req/s for 6 s, open loop
                t0 = time.monotonic()
                for i in range(48):
                    tally = during if state["reloading"] else before
                    tasks.append(asyncio.create_task(send(c, path, chat("in flight"), tally)))
                    await asyncio.sleep(max(0.0, t0 + (i + 1) / 8 - time.monotonic()))

            gen = asyncio.create_task(generate())
            await asyncio.sleep(1.5)
            state["reloading"] = True  # a changed ingress config: new replicas, the old ones drain
            await asyncio.to_thread(serve.run, build_app(reload_cfg, slow), name="soak", route_prefix="/soak")
            await gen
            await asyncio.gather(*tasks)
        return before, during

    before, during = asyncio.run(scenario())
    total = Tally()
    total.merge(before)
    total.merge(during)
    record("config reload (serve.run of a changed app) with non-streaming requests in flight", total,
           in_flight_at_reload=before.row(), sent_during_reload=during.row(),
           errors=sorted({p[:160] for p in total.problems}))
    assert total.lost == 0, (total.row(), total.problems[:5])
    assert before.sent >= 8 and before.outcomes == {"ok": before.sent}, (before.row(), before.problems[:5])
    r = httpx.post(BASE + path, json=chat("after"), timeout=30)
    assert r.status_code == 200
