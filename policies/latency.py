"""Live latency estimate per target: what a new request would see now, at a chosen quantile.

The router feeds each target's events: `started` / `finished` around every request (including the
ones that fail), `observe` once a response completes (TTFT, time per output token, output tokens),
`set_replicas` when autoscaling changes the replica count, `error` for failed requests. Policies call
`predict(target, prompt_tokens, output_tokens) -> (ttft_ms, e2e_ms)`.

Model. A target has `replicas x max_concurrency` slots. A request that finds a free slot sees only
service time: prefill (TTFT) then `output_tokens x TPOT`. A request that finds every slot busy waits
for `k = in_flight - slots + 1` departures; with many slots the departures are close to a Poisson
stream of rate `slots / mean service time`, so the wait is Gamma(k, mean_service / slots). Quantiles of
a sum of independent parts are combined as `sum of means + sqrt(sum of squared (quantile - mean))`,
exact for normal parts and close for the skewed ones seen here.

Observed TTFT includes the engine's queue wait, which would otherwise be counted twice; so `observe`
takes the wait if the caller knows it (`queue_ms`) and otherwise subtracts the mean wait the model
expects at that moment (unbiased when load changes slowly, and the leftover noise only widens the
quantile).

Decay is by count, not time: the newest observation weighs 1, one `half_life` observations older
weighs 1/2. No clock is read, so the estimator is deterministic under replay and the simulator.
Every call is O(1) except the quantile refresh (a numpy cumsum over ~500 buckets, a few µs), which
runs lazily on the first `predict` after new observations. Single-threaded (asyncio) use only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.types import Target

# Log-spaced buckets from 0.01 ms to ~3 hours: 2% relative resolution is far below the noise in latency.
_LOG_RATIO = math.log(1.04)
_MIN_MS = 0.01
_NBUCKETS = int(math.log(1e7 / _MIN_MS) / _LOG_RATIO) + 1
_RENORM_AT = 1e100
_MAX_TICKETS = 100_000


class LatencyConfig(BaseModel):
    """How the live latency estimator predicts and forgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantile: float = Field(0.9, gt=0.5, lt=1.0, description="Quantile the predictions are made at.")
    half_life: float = Field(
        200.0, gt=1, description="Observations after which an observation's weight halves (count decay)."
    )
    min_samples: float = Field(
        8.0, ge=1, description="Effective observations needed before the sketch replaces the prior."
    )
    prior_spread: float = Field(
        1.5, ge=1, description="Cold-start quantile = prior x this factor (the prior is a typical value)."
    )


class DecayedSketch:
    """Count-decayed histogram of positive values with a decayed mean and quantile (lazy refresh)."""

    __slots__ = ("_w", "_inc", "_growth", "_sum_w", "_sum_wx", "_sum_wxx", "_dirty", "_q", "_qcache", "_lo",
                 "_hi")

    def __init__(self, half_life: float, q: float) -> None:
        self._w = np.zeros(_NBUCKETS)
        self._inc = 1.0
        # Growing the increment instead of shrinking every weight keeps each update O(1).
        self._growth = 2.0 ** (1.0 / half_life)
        self._sum_w = 0.0
        self._sum_wx = 0.0
        self._sum_wxx = 0.0
        self._dirty = False
        self._q = q
        self._qcache = 0.0
        # Buckets ever touched lie in [_lo, _hi]: the quantile's cumulative sum needs only those (the
        # zeros around them add nothing, so the sums are the same to the last bit).
        self._lo, self._hi = _NBUCKETS, -1

    def add(self, x: float) -> None:
        x = max(x, _MIN_MS)
        i = min(int(math.log(x / _MIN_MS) / _LOG_RATIO), _NBUCKETS - 1)
        self._inc *= self._growth
        if self._inc > _RENORM_AT:
            self._w /= self._inc
            self._sum_w /= self._inc
            self._sum_wx /= self._inc
            self._sum_wxx /= self._inc
            self._inc = 1.0
        self._w[i] += self._inc
        if i < self._lo:
            self._lo = i
        if i > self._hi:
            self._hi = i
        self._sum_w += self._inc
        self._sum_wx += self._inc * x
        self._sum_wxx += self._inc * x * x
        self._dirty = True

    @property
    def effective_count(self) -> float:
        """Sum of weights relative to the newest one (tends to 1 / (1 - decay))."""
        return self._sum_w / self._inc

    @property
    def mean(self) -> float:
        return self._sum_wx / self._sum_w if self._sum_w else 0.0

    @property
    def var(self) -> float:
        if not self._sum_w:
            return 0.0
        m = self._sum_wx / self._sum_w
        return max(self._sum_wxx / self._sum_w - m * m, 0.0)

    def quantile(self) -> float:
        if self._dirty:
            lo = self._lo
            w = self._w[lo:self._hi + 1]
            cum = np.cumsum(w)
            target = self._q * cum[-1]
            j = int(np.searchsorted(cum, target))
            below = cum[j - 1] if j else 0.0
            frac = (target - below) / w[j] if w[j] else 0.5
            i = lo + j
            # Interpolate geometrically inside the bucket.
            self._qcache = _MIN_MS * math.exp((i + frac) * _LOG_RATIO)
            self._dirty = False
        return self._qcache


class _TargetState:
    __slots__ = (
        "in_flight", "queued_share", "replicas", "slots_per_replica", "prefill", "tpot", "decode",
        "errors", "requests", "prior", "snap", "slots",
    )

    def __init__(self, target: Target, cfg: LatencyConfig) -> None:
        self.in_flight = 0
        # Expected number of in-flight requests that had to queue (fractional: without tickets we
        # cannot tell which ones, only how many).
        self.queued_share = 0.0
        self.replicas = target.replicas
        self.slots_per_replica = target.latency.max_concurrency
        self.prior = target.latency
        self.prefill = DecayedSketch(cfg.half_life, cfg.quantile)
        self.tpot = DecayedSketch(cfg.half_life, cfg.quantile)
        self.decode = DecayedSketch(cfg.half_life, cfg.quantile)
        self.errors = 0.0
        self.requests = 0.0
        self.snap: tuple[float, float, float, float, float, float] | None = None
        self.slots = max(1, self.replicas * self.slots_per_replica)


class LatencyEstimator:
    """Implements `policies.base.LatencyView` from live per-target observations."""

    def __init__(self, targets: list[Target] | tuple[Target, ...] = (), config: LatencyConfig | None = None):
        self.config = config or LatencyConfig()
        self._z = NormalDist().inv_cdf(self.config.quantile)
        self._neg_log_tail = -math.log(1.0 - self.config.quantile)
        self._err_decay = 2.0 ** (-1.0 / self.config.half_life)
        self._state: dict[str, _TargetState] = {}
        self._ticket = 0
        self._tickets: dict[int, bool] = {}  # ticket -> found a free slot at start
        self._targets: dict[str, Target] = {}
        for t in targets:
            self._ensure(t)

    def _ensure(self, target: Target) -> _TargetState:
        st = self._state.get(target.id)
        if st is None:
            st = self._state[target.id] = _TargetState(target, self.config)
            self._targets[target.id] = target
        return st

    def _get(self, target_id: str) -> _TargetState:
        st = self._state.get(target_id)
        if st is None:
            # The router may report a target before any policy asked about it: default prior.
            st = self._ensure(Target(id=target_id, kind="local"))
        return st

    # -- events fed by the router -------------------------------------------------------------------
    def started(self, target_id: str) -> int:
        """A request was sent to the target (running or queued there). Returns a ticket for `observe`."""
        st = self._get(target_id)
        self._ticket += 1
        free = st.in_flight < st.slots
        self._tickets[self._ticket] = free
        if not free:
            st.queued_share += 1.0
        if len(self._tickets) > _MAX_TICKETS:  # callers that never hand tickets back must not leak
            del self._tickets[next(iter(self._tickets))]
        st.in_flight += 1
        return self._ticket

    def finished(self, target_id: str, ticket: int | None = None) -> None:
        """A request left the target, successfully or not."""
        st = self._get(target_id)
        if st.in_flight:
            st.queued_share -= st.queued_share / st.in_flight
        st.in_flight = max(0, st.in_flight - 1)
        if ticket is not None:
            self._tickets.pop(ticket, None)

    def error(self, target_id: str) -> None:
        """A request failed (the router still calls `finished` for it)."""
        st = self._get(target_id)
        st.errors = st.errors * self._err_decay + 1.0
        st.requests = st.requests * self._err_decay + 1.0

    def set_replicas(self, target_id: str, n: int) -> None:
        """Autoscaling changed the number of replicas serving the target."""
        st = self._get(target_id)
        st.replicas = max(1, int(n))
        st.slots = st.replicas * st.slots_per_replica

    def observe(
        self,
        target_id: str,
        ttft_ms: float,
        tpot_ms: float,
        output_tokens: int,
        queue_ms: float | None = None,
        ticket: int | None = None,
    ) -> None:
        """A request completed (call before `finished`).

        Pass the `ticket` from `started`: it tells whether the request found a free slot, so its TTFT
        is pure prefill. `queue_ms`: its wait before a slot, if the engine reports it.
        """
        st = self._get(target_id)
        tpot_ms = max(tpot_ms, 0.0)
        decode = max(output_tokens - 1, 0) * tpot_ms
        st.snap = None
        st.tpot.add(tpot_ms)
        st.decode.add(decode)
        admitted = self._tickets.pop(ticket, None) if ticket is not None else None
        if queue_ms is not None:
            st.prefill.add(ttft_ms - queue_ms)
        elif admitted or (admitted is None and st.queued_share < 0.02 * st.in_flight):
            # Found a free slot, so its TTFT is all prefill. A queued request's wait cannot be told
            # apart from its prefill (subtracting the expected wait, or trusting "no queue now",
            # made the prefill p90 6-7x too wide in simulation), so it teaches prefill nothing.
            # Without a ticket, learn only while (almost) no in-flight request had to queue.
            st.prefill.add(ttft_ms)
        st.requests = st.requests * self._err_decay + 1.0
        st.errors *= self._err_decay

    # -- reads ---------------------------------------------------------------------------------------
    def in_flight(self, target_id: str) -> int:
        st = self._state.get(target_id)
        return st.in_flight if st else 0

    def load(self, target_id: str) -> float:
        """Requests in flight per slot (replicas x max_concurrency): below 1 a new request finds a free
        slot, at or above 1 it queues behind `in_flight - slots` others."""
        st = self._state.get(target_id)
        return st.in_flight / st.slots if st else 0.0

    def error_rate(self, target_id: str) -> float:
        """Decayed share of recent requests that failed (0 before any)."""
        st = self._state.get(target_id)
        return st.errors / st.requests if st and st.requests else 0.0

    def _snapshot(self, st: _TargetState) -> tuple[float, float, float, float, float, float]:
        """(prefill mean, prefill q, tpot mean, tpot q, mean service, service cv^2), rebuilt lazily
        after new observations so that `predict` is a handful of float operations."""
        cfg = self.config
        if st.prefill.effective_count >= cfg.min_samples:
            p_mean, t_mean = st.prefill.mean, st.tpot.mean
            service = p_mean + st.decode.mean
            cv2 = (st.prefill.var + st.decode.var) / (service * service) if service > 0 else 1.0
            snap = (p_mean, st.prefill.quantile(), t_mean, st.tpot.quantile(), service, cv2)
        else:
            pr = st.prior
            # Cold start: the prior is a typical value; a typical request has ~128 output tokens.
            snap = (pr.ttft_ms, pr.ttft_ms * cfg.prior_spread, pr.tpot_ms, pr.tpot_ms * cfg.prior_spread,
                    pr.ttft_ms + 128 * pr.tpot_ms, 1.0)
        st.snap = snap
        return snap

    def predict(self, target: Target, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """(ttft_ms, e2e_ms) a new request would see now, at the configured quantile."""
        return self.predict_many((target,), prompt_tokens, output_tokens)[0]

    def predict_many(
        self, targets: Sequence[Target], prompt_tokens: int, output_tokens: int
    ) -> list[tuple[float, float]]:
        """`predict` for each target, in order, in one call (a decision asks about every candidate)."""
        decode = output_tokens - 1 if output_tokens > 1 else 0
        state, sqrt = self._state, math.sqrt
        out = []
        for target in targets:
            st = state.get(target.id) or self._ensure(target)
            p_mean, p_q, t_mean, t_q, service, cv2 = st.snap or self._snapshot(st)
            d_mean, d_ex = decode * t_mean, decode * (t_q - t_mean)
            p_ex = p_q - p_mean
            slots = st.slots
            k = st.in_flight - slots + 1
            if k <= 0:
                out.append((p_q, p_mean + d_mean + sqrt(p_ex * p_ex + d_ex * d_ex)))
                continue
            w_mean, w_q = self._wait(k, service / slots, cv2)
            w_ex = w_q - w_mean
            ttft = w_mean + p_mean + sqrt(w_ex * w_ex + p_ex * p_ex)
            out.append((ttft, w_mean + p_mean + d_mean + sqrt(w_ex * w_ex + p_ex * p_ex + d_ex * d_ex)))
        return out

    def _wait(self, k: int, gap_ms: float, cv2: float) -> tuple[float, float]:
        """Mean and quantile of the wait for the k-th departure from `slots` busy slots.

        The first departure of many busy slots is close to exponential whatever the service law; the
        k-th is a renewal sum whose variance grows like k x cv^2. var = gap^2 (1 + (k-1) cv^2) joins the
        two; the quantile is that of a Gamma with this mean and variance (Wilson-Hilferty).
        """
        mean = k * gap_ms
        if k == 1:
            return mean, gap_ms * self._neg_log_tail
        shape = k * k / (1.0 + (k - 1) * cv2)
        c = 1.0 / (9.0 * shape)
        return mean, mean * max(1.0 - c + self._z * math.sqrt(c), 0.0) ** 3
