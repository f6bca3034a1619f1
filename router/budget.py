"""Per-key spend budgets on the request path: reserve before a call, settle after it, release on failure.

`Budget` lives in one ingress replica and spends budget it leased from the ledger (router/ledger.py):
a reservation that fits the local lease costs no hop; one that does not asks the ledger for more (one
hop, then many requests without). Leases grow with demand: a key's first lease is one request's cost,
each next one twice the last, up to `lease_usd`, so a replica that gets few of a key's requests does not
park budget the other replicas need (back to one request's cost once its lease went back as idle).

A key without a budget reserves nothing but its spend is still reported, so `GET /v1/usage` shows it.
What a request reserves is its expected cost at the planned output length (`max_tokens`, else
`limits.expected_output_tokens`); the actual cost is settled after the call. An answer longer than
planned can overrun its reservation by the difference; that is the only way spend can pass the budget,
and the next request of that key then finds the budget gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from router.auth import Principal
from router.errors import BudgetExhausted
from router.ledger import LedgerConfig, LedgerServer

logger = logging.getLogger(__name__)


class LedgerClient(Protocol):
    """What a replica needs of the ledger (a Serve handle adapter, or an in-process server)."""

    async def grant(self, holder: str, key: str, need: float, want: float, budget: float) -> float: ...

    async def report(self, holder: str, used: dict[str, float], returned: dict[str, float]) -> None: ...

    async def spent(self, key: str) -> float: ...


class LocalLedger:
    """The ledger in this process (backend `memory`, unit tests): LedgerServer behind the async protocol."""

    def __init__(self, server: LedgerServer | None = None) -> None:
        self.server = server or LedgerServer()

    async def grant(self, holder: str, key: str, need: float, want: float, budget: float) -> float:
        return self.server.grant(holder, key, need, want, budget)

    async def report(self, holder: str, used: dict[str, float], returned: dict[str, float]) -> None:
        self.server.report(holder, used, returned)

    async def spent(self, key: str) -> float:
        return self.server.spent(key)


class HandleLedger:
    """The shared `BudgetLedger` deployment through its Serve handle."""

    def __init__(self, handle: Any) -> None:
        self._h = handle

    async def grant(self, holder: str, key: str, need: float, want: float, budget: float) -> float:
        return float(await self._h.grant.remote(holder, key, need, want, budget))

    async def report(self, holder: str, used: dict[str, float], returned: dict[str, float]) -> None:
        await self._h.report.remote(holder, used, returned)

    async def spent(self, key: str) -> float:
        return float(await self._h.spent.remote(key))


@dataclass
class Reservation:
    key: str
    amount: float
    leased: bool  # taken out of a lease (the key has a budget)
    done: bool = False


class Budget:
    def __init__(self, ledger: LedgerClient, *, lease_usd: float = 0.01, idle_s: float = 2.5,
                 holder: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.holder = holder or uuid.uuid4().hex
        self._lease_usd, self._idle_s, self._clock = lease_usd, idle_s, clock
        self._avail: dict[str, float] = {}  # leased and not reserved
        self._used: dict[str, float] = {}  # settled, not yet reported
        self._last: dict[str, float] = {}  # last reservation per key (idle leases go back)
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[str, int] = {}  # reservations not settled (their lease must stay renewed)
        self._grant: dict[str, float] = {}  # last lease granted per key (the next asks for twice that)

    async def reserve(self, principal: Principal, usd: float) -> Reservation:
        """Take `usd` of the key's budget for one call; BudgetExhausted (429) if it does not fit."""
        key, budget = principal.name, principal.budget_usd
        if budget is None:
            return Reservation(key, 0.0, leased=False)
        usd = max(usd, 0.0)
        self._last[key] = self._clock()
        if self._avail.get(key, 0.0) < usd:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:  # one grant per key at a time; the others then find the new lease
                have = self._avail.get(key, 0.0)
                if have < usd:
                    need = usd - have
                    want = max(need, min(self._lease_usd, 2 * self._grant.get(key, 0.0)))
                    got = await self.ledger.grant(self.holder, key, need, want, budget)
                    if got <= 0:
                        raise BudgetExhausted(
                            f"spend budget exhausted for key '{key}': this request's expected cost does not "
                            f"fit in what is left of {budget:.6f} USD"
                        )
                    self._avail[key] = self._avail.get(key, 0.0) + got  # settles may have come in meanwhile
                    self._grant[key] = got
        self._avail[key] = self._avail.get(key, 0.0) - usd
        self._inflight[key] = self._inflight.get(key, 0) + 1
        return Reservation(key, usd, leased=True)

    def settle(self, r: Reservation, actual_usd: float) -> None:
        """Book the actual cost of the call `r` was reserved for (once; later calls are no-ops)."""
        if r.done:
            return
        r.done = True
        actual = max(actual_usd, 0.0)
        if r.leased:
            self._avail[r.key] = self._avail.get(r.key, 0.0) + r.amount - actual
            self._inflight[r.key] -= 1
        if actual:
            self._used[r.key] = self._used.get(r.key, 0.0) + actual

    def release(self, r: Reservation) -> None:
        """The call cost nothing (it never reached a target)."""
        self.settle(r, 0.0)

    def pending(self, key: str) -> float:
        """Spend of this replica not yet reported to the ledger."""
        return self._used.get(key, 0.0)

    async def flush(self, *, final: bool = False) -> None:
        """Report spend, return idle (or, when `final`, all) unreserved lease; renews the rest."""
        now = self._clock()
        returned: dict[str, float] = {}
        for key, avail in list(self._avail.items()):
            if avail > 0 and (final or now - self._last.get(key, 0.0) > self._idle_s):
                returned[key] = avail
                self._avail[key] = 0.0
                self._grant.pop(key, None)  # idle: its next lease starts small again
        used, self._used = self._used, {}
        holding = any(v > 0 for v in self._avail.values()) or any(self._inflight.values())
        if not used and not returned and not holding and not final:
            return  # nothing to book and no lease to renew: no hop
        try:
            await self.ledger.report(self.holder, used, returned)
        except BaseException:
            for key, usd in used.items():  # keep it for the next flush
                self._used[key] = self._used.get(key, 0.0) + usd
            for key, usd in returned.items():
                self._avail[key] = self._avail.get(key, 0.0) + usd
            raise

    async def run(self, flush_s: float) -> None:
        """Background task of an ingress replica: report spend and renew leases every `flush_s`."""
        while True:
            await asyncio.sleep(flush_s)
            try:
                await self.flush()
            except Exception:  # ledger restarting: spend is kept for the next round
                logger.warning("budget ledger report failed; retrying", exc_info=True)

    async def usage(self, principal: Principal) -> dict[str, Any]:
        """The key's own spend (what `GET /v1/usage` returns)."""
        spent = await self.ledger.spent(principal.name) + self.pending(principal.name)
        budget = principal.budget_usd
        return {
            "object": "usage", "key": principal.name, "spent_usd": round(spent, 10),
            "budget_usd": budget,
            "remaining_usd": None if budget is None else round(max(0.0, budget - spent), 10),
        }


def budget_for(config: LedgerConfig, handle: Any | None) -> Budget:
    """The replica's Budget: over the shared ledger deployment's handle, or (backend `memory`, or no
    handle) a ledger in this process."""
    ledger: LedgerClient = HandleLedger(handle) if handle is not None else LocalLedger()
    return Budget(ledger, lease_usd=config.lease_usd, idle_s=5 * config.flush_s)
