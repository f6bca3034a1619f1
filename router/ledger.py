"""The budget ledger: one durable record of every key's spend, shared by all ingress replicas.

Ingress replicas do not ask the ledger per request. Each replica (a *holder*) leases budget in chunks
(`grant`) and spends its lease locally; it reports what it spent (`report`) in the background, and a
report also renews its leases. The ledger never grants more than `budget - spent - leased`, so the
replicas together cannot admit more than a key's budget however many there are.

Storage is SQL through the DB-API: SQLite by default (a file on the node the ledger replica runs on,
the head node; no server needed), or an external PostgreSQL for clusters that have one
(`ledger.url: postgresql://...`, needs the `psycopg` package). The ledger is a single-replica Serve
deployment (`BudgetLedger`), so there is one writer; `LedgerServer` is its plain class body, usable
without Ray (unit tests, `backend: memory`).

Leases carry an expiry: a replica that dies without returning its lease holds that budget for at most
`lease_ttl_s`; a live replica renews with every report. Spend reported before a restart survives it;
spend of calls that finished within the last `flush_s` before a crash of an ingress replica may be
lost (the reservation was already counted while it was leased, so it never overspends).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)


class LedgerConfig(BaseModel):
    """Where spend is kept and how replicas lease budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["deployment", "memory"] = Field(
        "deployment",
        description="'deployment': one BudgetLedger replica shared by all ingress replicas, persisted at "
        "`url`; 'memory': each ingress replica keeps its own, lost on restart (tests, single replica).",
    )
    url: str = Field(
        "sqlite:///~/.cache/llm-router/ledger.sqlite",
        description="sqlite:///<path> (on the head node) or postgresql://user@host/db (needs psycopg).",
    )
    lease_usd: float = Field(
        0.01, gt=0, description="Budget a replica leases at a time; larger = fewer ledger calls, more "
        "budget parked at one replica.",
    )
    lease_ttl_s: float = Field(
        60.0, gt=0, description="A lease not renewed for this long is returned (its replica died)."
    )
    flush_s: float = Field(
        0.5, gt=0, le=60, description="How often a replica reports its spend and renews its leases."
    )


# -- storage -----------------------------------------------------------------------------------------
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend (key TEXT PRIMARY KEY, spent DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (holder TEXT NOT NULL, key TEXT NOT NULL, amount DOUBLE PRECISION NOT NULL, "
    "expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (holder, key))",
)


def connect(url: str) -> tuple[Any, str]:
    """(DB-API connection, its parameter marker) for a ledger URL."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path != ":memory:":
            p = Path(path).expanduser()
            p.parent.mkdir(parents=True, exist_ok=True)
            path = str(p)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        return conn, "?"
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg  # optional dependency: only clusters with an external database need it

        return psycopg.connect(url, autocommit=True, connect_timeout=10), "%s"  # a dead host fails, not hangs
    raise ValueError("ledger.url must start with sqlite:/// or postgresql://")


class LedgerServer:
    """Spend and leases per key. Methods are atomic (one lock, one transaction each)."""

    def __init__(self, url: str = "sqlite:///:memory:", *, lease_ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._conn, m = connect(url)
        # Writers are serialized per store, not only per process (an old and a new ledger replica, or two
        # clusters on one database, may overlap): SQLite takes the file's write lock at BEGIN IMMEDIATE;
        # PostgreSQL (READ COMMITTED would let two grants read the same free budget) locks both tables in
        # a self-exclusive mode, readers outside the ledger unaffected.
        self._begin: tuple[str, ...] = (
            ("BEGIN IMMEDIATE",) if m == "?"
            else ("BEGIN", "LOCK TABLE spend, leases IN SHARE ROW EXCLUSIVE MODE")
        )
        self._q = {name: sql.replace("?", m) for name, sql in _SQL.items()}
        self._ttl, self._clock = lease_ttl_s, clock
        self._lock = threading.Lock()
        for stmt in _SCHEMA:
            self._conn.execute(stmt)

    def _broken(self) -> bool:
        """The connection is gone (psycopg: the database server restarted or the network dropped)."""
        return bool(getattr(self._conn, "broken", False) or getattr(self._conn, "closed", False))

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        with self._lock:
            for attempt in (0, 1):
                if self._broken():
                    self._conn, _ = connect(self._url)
                cur = self._conn.cursor()
                try:
                    for stmt in self._begin:
                        cur.execute(stmt)
                except Exception:
                    # Nothing of this transaction ran yet: a connection found dead here is retried once on
                    # a new one. A failure later (COMMIT included) is not retried: it may have committed.
                    if attempt == 0 and self._broken():
                        logger.warning("budget ledger: database connection lost; reconnecting")
                        continue
                    raise
                try:
                    out = fn(cur)
                except BaseException:
                    if not self._broken():
                        cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
                return out
            raise AssertionError("unreachable")

    def _one(self, cur: Any, name: str, *args: Any) -> float:
        cur.execute(self._q[name], args)
        row = cur.fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    def grant(self, holder: str, key: str, need: float, want: float, budget: float) -> float:
        """Lease `need` up to `want` of `key`'s budget to `holder`; 0 when not even `need` is free."""
        def tx(cur: Any) -> float:
            now = self._clock()
            cur.execute(self._q["expire"], (now,))
            free = budget - self._one(cur, "spent", key) - self._one(cur, "leased", key)
            if free + 1e-15 < need:
                return 0.0
            # At most half of what is free: near the end of a budget the rest stays spread over the
            # replicas that ask, instead of parking at the first one.
            amount = max(need, min(want, free / 2))
            cur.execute(self._q["lease"], (holder, key, amount, now + self._ttl, amount, now + self._ttl))
            return amount

        return float(self._run(tx))

    def report(self, holder: str, used: Mapping[str, float], returned: Mapping[str, float]) -> None:
        """Book spend (`used`, out of the holder's lease) and give back unused lease; renews the rest."""
        def tx(cur: Any) -> None:
            now = self._clock()
            for key, usd in used.items():
                if usd > 0:
                    cur.execute(self._q["charge"], (key, usd, usd))
            for key in set(used) | set(returned):
                back = max(0.0, used.get(key, 0.0)) + max(0.0, returned.get(key, 0.0))
                cur.execute(self._q["shrink"], (back, back, holder, key))
            cur.execute(self._q["renew"], (now + self._ttl, holder))
            cur.execute(self._q["drop_empty"], ())

        self._run(tx)

    def spent(self, key: str) -> float:
        return float(self._run(lambda cur: self._one(cur, "spent", key)))

    def leased(self, key: str) -> float:
        return float(self._run(lambda cur: self._one(cur, "leased", key)))


_SQL = {
    "expire": "DELETE FROM leases WHERE expires < ?",
    "spent": "SELECT spent FROM spend WHERE key = ?",
    "leased": "SELECT SUM(amount) FROM leases WHERE key = ?",
    "lease": "INSERT INTO leases (holder, key, amount, expires) VALUES (?, ?, ?, ?) "
             "ON CONFLICT (holder, key) DO UPDATE SET amount = leases.amount + ?, expires = ?",
    "charge": "INSERT INTO spend (key, spent) VALUES (?, ?) "
              "ON CONFLICT (key) DO UPDATE SET spent = spend.spent + ?",
    "shrink": "UPDATE leases SET amount = CASE WHEN amount > ? THEN amount - ? ELSE 0 END "
              "WHERE holder = ? AND key = ?",
    "renew": "UPDATE leases SET expires = ? WHERE holder = ?",
    "drop_empty": "DELETE FROM leases WHERE amount <= 0",
}


class LedgerReplica:
    """Body of the `BudgetLedger` deployment: LedgerServer behind async methods (sync SQLite I/O runs in a
    thread so a slow disk never stalls the replica's event loop)."""

    def __init__(self, config: LedgerConfig | dict[str, Any]) -> None:
        cfg = config if isinstance(config, LedgerConfig) else LedgerConfig.model_validate(config)
        self._server = LedgerServer(cfg.url, lease_ttl_s=cfg.lease_ttl_s)

    async def grant(self, holder: str, key: str, need: float, want: float, budget: float) -> float:
        import asyncio

        return await asyncio.to_thread(self._server.grant, holder, key, need, want, budget)

    async def report(self, holder: str, used: dict[str, float], returned: dict[str, float]) -> None:
        import asyncio

        await asyncio.to_thread(self._server.report, holder, used, returned)

    async def spent(self, key: str) -> float:
        import asyncio

        return await asyncio.to_thread(self._server.spent, key)


def bind_ledger(config: LedgerConfig) -> Any | None:
    """The bound BudgetLedger deployment for router.app.build (None for backend `memory`)."""
    if config.backend != "deployment":
        return None
    opts: dict[str, Any] = {"num_cpus": 0.01}
    if config.url.startswith("sqlite:///"):  # the file must outlive worker nodes: keep it on the head
        opts["resources"] = {"node:__internal_head__": 0.001}
    ledger = __getattr__("BudgetLedger")
    return ledger.options(ray_actor_options=opts).bind(config.model_dump(mode="json"))


def __getattr__(name: str) -> Any:
    if name == "BudgetLedger":
        from ray import serve

        # One replica = one writer; on the head node, where the SQLite file lives across restarts.
        deployment = serve.deployment(name="BudgetLedger", num_replicas=1, max_ongoing_requests=1000)(
            LedgerReplica)
        globals()["BudgetLedger"] = deployment
        return deployment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
