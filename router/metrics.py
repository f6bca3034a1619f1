"""Prometheus metrics behind a small interface, so the request path never imports Ray.

`RayMetrics` records through `ray.serve.metrics` (exported by each Ray node's metrics agent);
`InMemoryMetrics` keeps counts in dicts for tests and for running without Ray. Labels are target ids,
endpoints and outcomes only: never prompts, keys or key names.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

_LATENCY_BOUNDARIES_MS: list[float] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000
]
_DECIDE_BOUNDARIES_MS: list[float] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100]


class Metrics(Protocol):
    def request(self, target: str, endpoint: str, outcome: str, n: int = 1) -> None:
        """`n` finished requests; outcome e.g. ok, error, rejected, client_error, stream_error."""

    def decision(self, ms: float) -> None: ...

    def ttft(self, target: str, ms: float) -> None: ...

    def e2e(self, target: str, ms: float) -> None: ...

    def fallback(self, from_target: str, to_target: str, why: str, n: int = 1) -> None:
        """The router moved on to an alternate `n` times (why: error, escalate)."""

    def cost(self, target: str, usd: float) -> None: ...


class NoMetrics:
    def request(self, target: str, endpoint: str, outcome: str, n: int = 1) -> None:
        pass

    def decision(self, ms: float) -> None:
        pass

    def ttft(self, target: str, ms: float) -> None:
        pass

    def e2e(self, target: str, ms: float) -> None:
        pass

    def fallback(self, from_target: str, to_target: str, why: str, n: int = 1) -> None:
        pass

    def cost(self, target: str, usd: float) -> None:
        pass


class InMemoryMetrics:
    """Counts and raw observations in dicts (tests, and single-process runs without Ray)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.decisions_ms: list[float] = []
        self.ttft_ms: dict[str, list[float]] = defaultdict(list)
        self.e2e_ms: dict[str, list[float]] = defaultdict(list)
        self.fallbacks: dict[tuple[str, str, str], int] = defaultdict(int)
        self.cost_usd: dict[str, float] = defaultdict(float)

    def request(self, target: str, endpoint: str, outcome: str, n: int = 1) -> None:
        self.requests[(target, endpoint, outcome)] += n

    def decision(self, ms: float) -> None:
        self.decisions_ms.append(ms)

    def ttft(self, target: str, ms: float) -> None:
        self.ttft_ms[target].append(ms)

    def e2e(self, target: str, ms: float) -> None:
        self.e2e_ms[target].append(ms)

    def fallback(self, from_target: str, to_target: str, why: str, n: int = 1) -> None:
        self.fallbacks[(from_target, to_target, why)] += n

    def cost(self, target: str, usd: float) -> None:
        self.cost_usd[target] += usd


class RayMetrics:
    """`ray.serve.metrics` Counters and Histograms (create inside a Serve replica)."""

    def __init__(self, prefix: str = "router") -> None:
        from ray.serve import metrics as m  # lazy: only inside a Ray process

        self._requests = m.Counter(
            f"{prefix}_requests", description="Requests by target, endpoint and outcome.",
            tag_keys=("target", "endpoint", "outcome"),  # type: ignore[arg-type]  # ray types it tuple[str]
        )
        self._decision = m.Histogram(
            f"{prefix}_decision_ms", description="Time the policy took to decide, ms.",
            boundaries=_DECIDE_BOUNDARIES_MS,
        )
        self._ttft = m.Histogram(
            f"{prefix}_ttft_ms", description="Time to first token per target, ms.",
            boundaries=_LATENCY_BOUNDARIES_MS, tag_keys=("target",),
        )
        self._e2e = m.Histogram(
            f"{prefix}_e2e_ms", description="End-to-end latency per target, ms.",
            boundaries=_LATENCY_BOUNDARIES_MS, tag_keys=("target",),
        )
        self._fallback = m.Counter(
            f"{prefix}_fallbacks", description="Moves to an alternate target.",
            tag_keys=("from_target", "to_target", "why"),  # type: ignore[arg-type]
        )
        self._cost = m.Counter(
            f"{prefix}_cost_usd", description="Actual cost of answered requests, USD.", tag_keys=("target",),
        )

    def request(self, target: str, endpoint: str, outcome: str, n: int = 1) -> None:
        self._requests.inc(n, tags={"target": target, "endpoint": endpoint, "outcome": outcome})

    def decision(self, ms: float) -> None:
        self._decision.observe(ms)

    def ttft(self, target: str, ms: float) -> None:
        self._ttft.observe(ms, tags={"target": target})

    def e2e(self, target: str, ms: float) -> None:
        self._e2e.observe(ms, tags={"target": target})

    def fallback(self, from_target: str, to_target: str, why: str, n: int = 1) -> None:
        self._fallback.inc(n, tags={"from_target": from_target, "to_target": to_target, "why": why})

    def cost(self, target: str, usd: float) -> None:
        if usd > 0:
            self._cost.inc(usd, tags={"target": target})


class BufferedMetrics:
    """Keeps the request path off the metrics exporter: calls append to in-process buffers, and `flush()`
    (a background task in the ingress, every second or so) hands them to the sink. Counters are summed per
    label set, so the sink sees one increment per label set per flush instead of one per request;
    histogram observations are replayed one by one (a histogram needs every value).

    If nothing flushes, `max_pending` observations trigger a flush inline: memory stays bounded.
    """

    def __init__(self, sink: Metrics, max_pending: int = 20_000) -> None:
        self.sink = sink
        self.max_pending = max_pending
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._fallbacks: dict[tuple[str, str, str], int] = defaultdict(int)
        self._cost: dict[str, float] = defaultdict(float)
        self._observed: list[tuple[int, str, float]] = []  # (kind, target, ms); kind 0 decision 1 ttft 2 e2e

    def request(self, target: str, endpoint: str, outcome: str, n: int = 1) -> None:
        self._requests[(target, endpoint, outcome)] += n

    def decision(self, ms: float) -> None:
        self._observe(0, "", ms)

    def ttft(self, target: str, ms: float) -> None:
        self._observe(1, target, ms)

    def e2e(self, target: str, ms: float) -> None:
        self._observe(2, target, ms)

    def fallback(self, from_target: str, to_target: str, why: str, n: int = 1) -> None:
        self._fallbacks[(from_target, to_target, why)] += n

    def cost(self, target: str, usd: float) -> None:
        if usd > 0:
            self._cost[target] += usd

    def _observe(self, kind: int, target: str, ms: float) -> None:
        self._observed.append((kind, target, ms))
        if len(self._observed) >= self.max_pending:
            self.flush()

    def flush(self) -> int:
        """Hand everything buffered to the sink; returns how many records went out."""
        requests, self._requests = self._requests, defaultdict(int)
        fallbacks, self._fallbacks = self._fallbacks, defaultdict(int)
        cost, self._cost = self._cost, defaultdict(float)
        observed, self._observed = self._observed, []
        sink = self.sink
        for (target, endpoint, outcome), n in requests.items():
            sink.request(target, endpoint, outcome, n)
        for (a, b, why), n in fallbacks.items():
            sink.fallback(a, b, why, n)
        for target, usd in cost.items():
            sink.cost(target, usd)
        record = (lambda _t, ms: sink.decision(ms), sink.ttft, sink.e2e)
        for kind, target, ms in observed:
            record[kind](target, ms)
        return len(requests) + len(fallbacks) + len(cost) + len(observed)


def default_metrics() -> Any:
    """Buffered RayMetrics when running inside a Ray worker (the owner flushes it), NoMetrics otherwise."""
    try:
        import ray

        if ray.is_initialized():
            return BufferedMetrics(RayMetrics())
    except ImportError:
        pass
    return NoMetrics()
