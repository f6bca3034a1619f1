"""Every call accounted for, on a real Serve app built by `router.app.build` with fake engines that
record what reaches them: abandoned calls are cancelled upstream and charged, a client gone before the
first chunk leaves nothing open, cascade keeps and charges the cheap answer, an error event inside a
stream ends it as an error, a budget holds over two ingress replicas and across a restart of the app
(with the ledger in SQLite and in a real PostgreSQL), and after a cool-down one request probes the
target while the others route elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.harness import Tally, chat, deploy_ready, ingress_stats, record, send, serve_cluster, wait_until
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PORT = 8230
BASE = f"http://127.0.0.1:{PORT}"
KEY = "rk-budget-5e1f0a"
USAGE_OF = {"Authorization": f"Bearer {KEY}"}
PRICE = 1.0  # USD per 1M output tokens; input is free, so a reservation at max_tokens is the exact cost


def _model(tid: str, out_price: float = PRICE, **over) -> dict:
    return {"id": tid, "source": "fake", "context_window": 2048, "input_price_per_mtok": 0.0,
            "output_price_per_mtok": out_price, "quality_prior": 0.5,
            "latency": {"ttft_ms": 30, "tpot_ms": 5, "max_concurrency": 64}, **over}


cluster = serve_cluster(PORT)


def _engine(app: str, tid: str):
    from ray import serve

    return serve.get_deployment_handle(f"model-{tid}", app_name=app)


# -- an attempt abandoned by its time limit --------------------------------------------------------
def test_attempt_timeout_cancels_the_upstream_call_and_charges_it(cluster):
    cfg = {"models": [_model("slow"), _model("fast", out_price=2.0)],
           "limits": {"attempt_timeout_floor_s": 0.5, "attempt_timeout_factor": 0.01, "request_timeout_s": 20}}
    app = deploy_ready("abandon", cfg, {"slow": {"ttft_s": 30}})
    path = app + "/v1/chat/completions"
    tally = Tally()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=BASE) as c:
            for stream in (False, True):
                assert await send(c, path, chat("count", stream=stream, max_tokens=4), tally) == "ok"

    asyncio.run(run())
    stats = _engine("abandon", "slow").stats.remote().result()
    usage = httpx.get(BASE + app + "/v1/usage", timeout=10).json()
    answered_cost = 2 * 4 * 2.0 / 1e6  # the two answers from "fast"
    record("attempt timeout: abandoned call cancelled upstream and charged", tally,
           slow_calls=stats["complete"] + stats["stream"], slow_cancelled=stats["complete_cancelled"]
           + stats["cancelled"], spent_usd=usage["spent_usd"], answered_usd=answered_cost)
    assert tally.targets == {"fast": 2} and tally.lost == 0
    assert stats["complete"] == 1 and stats["stream"] == 1
    assert stats["complete_cancelled"] == 1 and stats["cancelled"] == 1  # the engine saw both cancelled
    assert usage["spent_usd"] > answered_cost  # the abandoned calls were charged too


# -- a client gone before the first chunk, a mid-stream error event, cascade -----------------------
@pytest.fixture(scope="module")
def misc_app(cluster):
    cfg = {"models": [_model("cheap", out_price=1.0), _model("strong", out_price=5.0),
                      _model("flaky", out_price=0.5)],
           "policy": {"name": "cascade", "chain": ["cheap", "strong"], "min_answer_chars": 1000},
           "limits": {"request_timeout_s": 20}}
    engines = {"cheap": {"ttft_s": 0.3, "token_delay_s": 0.2, "words": 12},
               "strong": {"fail_next": 1000, "fail": "rejected"},
               "flaky": {"error_event_after": 2}}
    return deploy_ready("misc", cfg, engines)


def test_client_gone_before_first_chunk_leaves_counts_spend_and_spans_consistent(misc_app):
    path = misc_app + "/v1/chat/completions"
    before = _engine("misc", "cheap").stats.remote().result()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=BASE) as c:
            for _ in range(5):
                async with c.stream("POST", path, json=chat("x", model="cheap", stream=True), timeout=20) as r:
                    assert r.status_code == 200  # headers came with the first chunk; leave without reading
    asyncio.run(run())
    engine = _engine("misc", "cheap")
    assert wait_until(lambda: engine.stats.remote().result()["cancelled"] - before["cancelled"] == 5, 15)
    stats = ingress_stats("misc")
    usage = httpx.get(BASE + misc_app + "/v1/usage", timeout=10).json()
    record("client gone before the first chunk (5 streams)", {"sent": 5, "answered": 0, "errored": 0, "lost": 0},
           upstream_cancelled=engine.stats.remote().result()["cancelled"] - before["cancelled"],
           in_flight=[s["in_flight"]["cheap"] for s in stats], open_requests=[s["open_requests"] for s in stats],
           spent_usd=usage["spent_usd"])
    assert all(s["in_flight"]["cheap"] == 0 and s["open_requests"] == 0 for s in stats)
    assert usage["spent_usd"] > 0  # the prompt and the chunk they were sent were charged


def test_cascade_escalation_rejected_returns_and_charges_the_cheap_answer(misc_app):
    tally = Tally()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=BASE) as c:
            usage0 = (await c.get(misc_app + "/v1/usage")).json()["spent_usd"]
            rs = [await c.post(misc_app + "/v1/chat/completions", json=chat("hard one", max_tokens=4), timeout=20)
                  for _ in range(3)]
            await asyncio.sleep(0.1)
            usage1 = (await c.get(misc_app + "/v1/usage")).json()["spent_usd"]
            tally.problems.append(f"{usage0} -> {usage1}")
            rs.append(usage1 - usage0)  # type: ignore[arg-type]
            return rs

    *rs, delta = asyncio.run(run())
    strong = _engine("misc", "strong").stats.remote().result()
    for r in rs:
        tally.outcomes["ok" if r.status_code == 200 else f"http_{r.status_code}"] += 1
        tally.targets[r.headers.get("x-router-target", "?")] += 1
    record("cascade: escalation rejected (non-retryable) -> cheap answer", tally, strong_calls=strong["complete"],
           charged_usd=delta)
    assert tally.outcomes == {"ok": 3} and tally.targets == {"cheap": 3}
    assert all(r.headers["x-router-reason"] == "cascade" for r in rs)
    assert strong["complete"] == 3 and strong["failed"] == 3  # escalation was tried and refused
    assert delta == pytest.approx(3 * 4 * 1.0 / 1e6, rel=1e-6)  # the cheap answers, charged to cheap


def test_error_event_mid_stream_ends_the_stream_as_an_error(misc_app):
    tally = Tally()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=BASE) as c:
            await asyncio.gather(*(send(c, misc_app + "/v1/chat/completions",
                                        chat("x", model="flaky", stream=True), tally) for _ in range(4)))
    asyncio.run(run())
    record("engine error event mid-stream", tally)
    assert tally.outcomes == {"stream_error": 4}, tally.row()


# -- a budget over two ingress replicas, and across a restart ---------------------------------------
def _budget_cfg(budget: float, ledger_url: str | None) -> dict:
    ledger: dict = {"lease_usd": 1.0, "flush_s": 0.2}
    if ledger_url:
        ledger["url"] = ledger_url
    return {"models": [_model("m")],
            "auth": {"keys": [{"name": "payer", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                               "budget_usd": budget}],
                     "ledger": ledger},
            "ingress": {"num_replicas": 2}}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_store(request) -> Iterator[tuple[str, str | None]]:
    """(label, ledger URL): the harness's SQLite file, or a real PostgreSQL server started for the test
    (tests/support/postgres.py) that the ledger deployment reaches over 127.0.0.1."""
    if request.param == "sqlite":
        yield "SQLite", None
        return
    pg = PostgresServer()
    try:
        yield "PostgreSQL", pg.create_database()
    finally:
        pg.close()


def test_budget_holds_over_two_ingress_replicas_and_survives_a_restart(cluster, ledger_store):
    from ray import serve

    store, ledger_url = ledger_store
    name = "budget" if ledger_url is None else "budget-pg"
    per_request = 4 * PRICE / 1e6  # max_tokens=4 at the output price: reservation == actual cost
    budget = 10 * per_request
    app = deploy_ready(name, _budget_cfg(budget, ledger_url), {"m": {"ttft_s": 0.2}})
    path = app + "/v1/chat/completions"
    tally = Tally()

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=BASE, limits=httpx.Limits(max_connections=100)) as c:
            await asyncio.gather(*(send(c, path, chat("x", max_tokens=4, stream=i % 2 == 1), tally, USAGE_OF)
                                   for i in range(50)))
    asyncio.run(burst())
    replicas = ingress_stats(name)
    time.sleep(1.0)  # both replicas report their spend (flush_s 0.2)
    usage = httpx.get(BASE + app + "/v1/usage", headers=USAGE_OF, timeout=10).json()
    assert "spent_usd" in usage, (usage, tally.row(), tally.problems[:3])
    engine = _engine(name, "m").stats.remote().result()
    record(f"50 concurrent requests, budget for 10, 2 ingress replicas ({store} ledger)", tally,
           replicas=len(replicas),
           engine_calls=engine["complete"] + engine["stream"], spent_usd=usage["spent_usd"], budget_usd=budget,
           overspend_usd=max(0.0, usage["spent_usd"] - budget))
    assert len(replicas) == 2
    assert tally.lost == 0 and set(tally.outcomes) <= {"ok", "http_429"}, tally.row()
    assert 1 <= tally.answered <= 10 and tally.outcomes["http_429"] == 50 - tally.answered
    assert engine["complete"] + engine["stream"] == tally.answered  # a 429 never reached the engine
    assert usage["spent_usd"] <= budget * (1 + 1e-9)
    assert usage["spent_usd"] == pytest.approx(tally.answered * per_request)

    # restart the app (its ledger deployment included): the spend is read back from the ledger's store
    serve.delete(name)
    deploy_ready(name, _budget_cfg(budget, ledger_url), {"m": {"ttft_s": 0.2}})
    after = httpx.get(BASE + app + "/v1/usage", headers=USAGE_OF, timeout=10).json()
    again = Tally()
    for _ in range(12):  # what the first app left (leases it handed back on shutdown included), not more
        asyncio.run(_one(path, again))
    time.sleep(1.0)
    final = httpx.get(BASE + app + "/v1/usage", headers=USAGE_OF, timeout=10).json()
    record(f"spend after restarting the app ({store} ledger)", again, spent_before=usage["spent_usd"],
           spent_after_restart=after["spent_usd"], spent_final=final["spent_usd"], budget_usd=budget)
    assert after["spent_usd"] == pytest.approx(usage["spent_usd"])  # read back from the ledger's store
    assert again.answered == round((budget - usage["spent_usd"]) / per_request)  # the rest of it, exactly
    assert again.outcomes["http_429"] == 12 - again.answered
    assert final["spent_usd"] == pytest.approx(budget) and final["spent_usd"] <= budget * (1 + 1e-9)
    if ledger_url is not None:  # the spend is in PostgreSQL itself, not somewhere else
        import psycopg

        with psycopg.connect(ledger_url) as conn:
            row = conn.execute("SELECT spent FROM spend WHERE key = 'payer'").fetchone()
        assert row is not None and row[0] == pytest.approx(final["spent_usd"])
    serve.delete(name)  # before the fixture stops a PostgreSQL the ledger would keep reaching for


async def _one(path: str, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=BASE) as c:
        await send(c, path, chat("x", max_tokens=4), tally, USAGE_OF)


# -- one probe after a cool-down ---------------------------------------------------------------------
def test_one_probe_after_cool_down(cluster):
    cfg = {"models": [_model("first", out_price=0.5), _model("second")], "limits": {"request_timeout_s": 20}}
    app = deploy_ready("probe", cfg, {"first": {"fail_next": 3, "ttft_s": 1.0}})
    path = app + "/v1/chat/completions"
    engine = _engine("probe", "first")
    tally = Tally()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=BASE) as c:
            for _ in range(3):  # three failures in a row: "first" cools down (10 s), "second" answers
                await send(c, path, chat("x", max_tokens=2), tally)
            stats = await asyncio.to_thread(ingress_stats, "probe")
            assert {s["states"]["first"] for s in stats} == {"cooling_down"}, stats
            await asyncio.sleep(10.5)
            # eight at once after the cool-down: one probes "first" (1 s to answer), the rest go on
            await asyncio.gather(*(send(c, path, chat("x", max_tokens=2), tally) for _ in range(8)))
    asyncio.run(run())
    stats = engine.stats.remote().result()
    record("one probe after cool-down (8 concurrent)", tally, first_calls_after_cooldown=stats["complete"] - 3)
    assert tally.lost == 0 and tally.outcomes == {"ok": 11}, tally.row()
    assert stats["complete"] == 4  # 3 failures + exactly one probe
    assert tally.targets["first"] == 1 and tally.targets["second"] == 10
