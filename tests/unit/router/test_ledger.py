"""The budget ledger and the per-replica Budget that leases from it (no Ray: the server in process).

Every ledger contract test runs against both stores: a SQLite file and a real PostgreSQL server
(tests/support/postgres.py: the `pgserver` wheel's binaries on 127.0.0.1, a new database per test).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from policies.types import Constraints
from router.auth import Principal
from router.budget import Budget, LocalLedger
from router.errors import BudgetExhausted
from router.ledger import LedgerConfig, LedgerServer, connect
from tests.support.postgres import PostgresServer

EPOCH = 1.8e9  # a clock that reads like time.time(): lease expiries must keep sub-second precision there


def _key(name: str = "k", budget: float | None = 1.0) -> Principal:
    return Principal(name, None, Constraints.model_validate({}), budget)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """An empty ledger store: a new SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sub/ledger.sqlite"
    return request.getfixturevalue("pg").create_database()


def test_grant_never_exceeds_budget_over_holders(url) -> None:
    s = LedgerServer(url)
    got = [s.grant(f"h{i}", "k", 0.1, 0.5, 1.0) for i in range(30)]
    assert sum(got) <= 1.0 + 1e-12
    assert got[0] == pytest.approx(0.5)  # half of what is free, at most `want`
    assert got[-1] == 0.0  # nothing left for a 0.1 need
    assert s.leased("k") == pytest.approx(sum(got))


def test_report_books_spend_and_returns_lease(url) -> None:
    s = LedgerServer(url)
    assert s.grant("h", "k", 0.2, 0.2, 1.0) == pytest.approx(0.2)
    s.report("h", {"k": 0.05}, {"k": 0.1})
    assert s.spent("k") == pytest.approx(0.05)
    assert s.leased("k") == pytest.approx(0.05)  # 0.2 - used - returned
    # free = 1 - 0.05 spent - 0.05 leased: a need of 0.95 does not fit, 0.9 does
    assert s.grant("h2", "k", 0.95, 0.95, 1.0) == 0.0
    assert s.grant("h2", "k", 0.9, 0.9, 1.0) == pytest.approx(0.9)


def test_expired_lease_of_a_dead_holder_is_freed(url) -> None:
    now = [EPOCH]
    s = LedgerServer(url, lease_ttl_s=10, clock=lambda: now[0])
    assert s.grant("dead", "k", 1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert s.grant("live", "k", 0.1, 0.1, 1.0) == 0.0
    now[0] = EPOCH + 9
    assert s.grant("live", "k", 0.1, 0.1, 1.0) == 0.0  # not yet
    now[0] = EPOCH + 11
    assert s.grant("live", "k", 0.1, 0.1, 1.0) == pytest.approx(0.1)


def test_report_renews_the_holders_leases(url) -> None:
    now = [EPOCH]
    s = LedgerServer(url, lease_ttl_s=10, clock=lambda: now[0])
    s.grant("h", "k", 0.5, 0.5, 1.0)
    now[0] = EPOCH + 8
    s.report("h", {}, {})
    now[0] = EPOCH + 15
    s.grant("other", "k", 0.1, 0.1, 1.0)  # expires what has expired
    assert s.leased("k") == pytest.approx(0.6)
    now[0] = EPOCH + 19
    s.grant("other", "k", 0.1, 0.1, 1.0)
    assert s.leased("k") == pytest.approx(0.2)  # h's renewed lease ran out at 18


def test_spend_survives_a_new_ledger_instance(url) -> None:
    s = LedgerServer(url)
    s.grant("h", "k", 0.3, 0.3, 1.0)
    s.report("h", {"k": 0.25}, {"k": 0.05})
    del s
    again = LedgerServer(url)
    assert again.spent("k") == pytest.approx(0.25)
    assert again.grant("h2", "k", 0.8, 0.8, 1.0) == 0.0  # 0.75 left


def test_concurrent_ledgers_on_one_store_never_overspend(url) -> None:
    """Eight ledger instances (own connections, own threads) lease from one store at once: what they
    hold and spend together never passes the budget, and every grant is accounted for."""
    budget, need = 1.0, 0.01
    servers = [LedgerServer(url) for _ in range(8)]
    granted = [0.0] * len(servers)
    start = threading.Barrier(len(servers))

    def holder(i: int) -> None:
        s = servers[i]
        start.wait()
        for n in range(40):
            got = s.grant(f"h{i}", "k", need, 0.05, budget)
            granted[i] += got
            if got and n % 2:  # spend half of every other lease: reports race with grants
                s.report(f"h{i}", {"k": got / 2}, {})

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = servers[0]
    assert s.spent("k") + s.leased("k") <= budget + 1e-9
    assert sum(granted) <= budget + 1e-9  # leases only shrink by what was spent or given back
    assert s.spent("k") + s.leased("k") == pytest.approx(sum(granted))
    assert s.grant("late", "k", need, need, budget) == 0.0  # nothing free: 8 x 40 asks outran the budget


def test_postgres_restart_keeps_spend_and_the_ledger_reconnects(pg, caplog) -> None:
    """The database server restarts under a live ledger: spend and leases are still there, and the
    ledger's next call finds its connection dead, reconnects and succeeds (no call fails)."""
    url = pg.create_database()
    s = LedgerServer(url)
    assert s.grant("h", "k", 0.4, 0.4, 1.0) == pytest.approx(0.4)
    s.report("h", {"k": 0.3}, {})
    old_pid = pg.proc.pid
    pg.stop()
    pg.start()
    assert pg.proc.pid != old_pid
    assert s.spent("k") == pytest.approx(0.3)  # over a new connection, from the restarted server
    assert "reconnecting" in caplog.text
    assert s.leased("k") == pytest.approx(0.1)
    assert s.grant("h2", "k", 0.6, 0.6, 1.0) == pytest.approx(0.6)
    assert s.grant("h3", "k", 0.01, 0.01, 1.0) == 0.0


def test_bad_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="ledger.url"):
        connect("mysql://x")
    assert LedgerConfig().backend == "deployment"


async def test_budget_reserves_locally_and_leases_in_chunks() -> None:
    ledger = LocalLedger()
    calls = []
    grant = ledger.grant

    async def counted(*a):
        calls.append(a)
        return await grant(*a)

    ledger.grant = counted  # type: ignore[method-assign]
    b = Budget(ledger, lease_usd=0.1)
    rs = [await b.reserve(_key(), 0.01) for _ in range(35)]
    # leases grow with demand: one request's cost first, then twice the last, up to lease_usd (0.1);
    # 35 reservations of 0.01 take 6 ledger calls, not 35
    assert [c[3] for c in calls] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1, 0.1])
    for r in rs:
        b.settle(r, 0.008)
    await b.flush()
    assert ledger.server.spent("k") == pytest.approx(35 * 0.008)


async def test_a_replica_with_few_requests_does_not_park_the_budget() -> None:
    """Budget for 10: the replica asked first gets one request, the other nine; all ten are admitted
    (with a first lease of half of what is free, the first replica parked five requests' worth)."""
    ledger = LocalLedger()
    quiet, busy = Budget(ledger, lease_usd=1.0), Budget(ledger, lease_usd=1.0)
    key = _key(budget=10 * 0.01)
    await quiet.reserve(key, 0.01)
    for _ in range(9):
        await busy.reserve(key, 0.01)
    with pytest.raises(BudgetExhausted):
        await busy.reserve(key, 0.01)
    assert ledger.server.leased("k") == pytest.approx(0.1)


async def test_a_settle_during_a_lease_request_is_kept() -> None:
    """A call settled below its reservation while another request waits for a lease: the refund stays
    in the replica's lease (it used to be overwritten, parking it at the ledger for the replica's life)."""
    ledger = LocalLedger()
    b = Budget(ledger, lease_usd=0.01)
    key = _key(budget=1.0)
    first = await b.reserve(key, 0.01)  # the whole first lease
    gate = asyncio.Event()
    grant = ledger.grant

    async def slow(*a):
        await gate.wait()
        return await grant(*a)

    ledger.grant = slow  # type: ignore[method-assign]
    waiting = asyncio.create_task(b.reserve(key, 0.01))
    await asyncio.sleep(0)
    b.settle(first, 0.004)  # 0.006 back into the lease while the grant is in flight
    gate.set()
    await waiting
    await b.flush(final=True)  # hands back everything not reserved
    assert ledger.server.leased("k") == pytest.approx(0.01)  # only the reservation still open


async def test_budget_refuses_what_does_not_fit_and_release_gives_back() -> None:
    b = Budget(LocalLedger(), lease_usd=1.0)
    r = await b.reserve(_key(budget=0.03), 0.02)
    with pytest.raises(BudgetExhausted):
        await b.reserve(_key(budget=0.03), 0.02)
    b.release(r)
    b.release(r)  # idempotent
    r2 = await b.reserve(_key(budget=0.03), 0.02)
    b.settle(r2, 0.02)
    await b.flush()
    assert (await b.usage(_key(budget=0.03)))["spent_usd"] == pytest.approx(0.02)


async def test_two_replicas_share_one_budget(url) -> None:
    ledger = LocalLedger(LedgerServer(url))
    a, b = Budget(ledger, lease_usd=0.05), Budget(ledger, lease_usd=0.05)
    admitted = 0

    async def one(budget: Budget) -> None:
        nonlocal admitted
        try:
            r = await budget.reserve(_key(budget=0.1), 0.01)
        except BudgetExhausted:
            return
        admitted += 1
        await asyncio.sleep(0)
        budget.settle(r, 0.01)

    await asyncio.gather(*(one(a if i % 2 else b) for i in range(50)))
    await a.flush(final=True)
    await b.flush(final=True)
    assert admitted <= 10
    assert admitted >= 8  # halving leaves little budget stranded
    assert ledger.server.spent("k") == pytest.approx(admitted * 0.01)
    assert ledger.server.leased("k") == pytest.approx(0.0)


async def test_unbudgeted_key_needs_no_lease_but_its_spend_is_reported() -> None:
    ledger = LocalLedger()
    b = Budget(ledger)
    r = await b.reserve(_key(budget=None), 5.0)
    b.settle(r, 0.5)
    assert ledger.server.leased("k") == 0.0
    assert (await b.usage(_key(budget=None)))["spent_usd"] == pytest.approx(0.5)  # pending counts
    await b.flush()
    assert ledger.server.spent("k") == pytest.approx(0.5)
    assert (await b.usage(_key(budget=None)))["remaining_usd"] is None


async def test_failed_report_keeps_spend_for_the_next_flush() -> None:
    ledger = LocalLedger()
    b = Budget(ledger)
    r = await b.reserve(_key(), 0.1)
    b.settle(r, 0.1)
    real = ledger.report

    async def broken(*a):
        raise ConnectionError("ledger restarting")

    ledger.report = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await b.flush()
    ledger.report = real  # type: ignore[method-assign]
    await b.flush()
    assert ledger.server.spent("k") == pytest.approx(0.1)
