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
    def request(self, target: str, endpoint: str, outcome: str) -> None:
        """One finished request; outcome e.g. ok, error, rejected, client_error, stream_error."""

    def decision(self, ms: float) -> None: ...

    def ttft(self, target: str, ms: float) -> None: ...

    def e2e(self, target: str, ms: float) -> None: ...

    def fallback(self, from_target: str, to_target: str, why: str) -> None:
        """The router moved on to an alternate (why: error, escalate)."""

    def cost(self, target: str, usd: float) -> None: ...


class NoMetrics:
    def request(self, target: str, endpoint: str, outcome: str) -> None:
        pass

    def decision(self, ms: float) -> None:
        pass

    def ttft(self, target: str, ms: float) -> None:
        pass

    def e2e(self, target: str, ms: float) -> None:
        pass

    def fallback(self, from_target: str, to_target: str, why: str) -> None:
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

    def request(self, target: str, endpoint: str, outcome: str) -> None:
        self.requests[(target, endpoint, outcome)] += 1

    def decision(self, ms: float) -> None:
        self.decisions_ms.append(ms)

    def ttft(self, target: str, ms: float) -> None:
        self.ttft_ms[target].append(ms)

    def e2e(self, target: str, ms: float) -> None:
        self.e2e_ms[target].append(ms)

    def fallback(self, from_target: str, to_target: str, why: str) -> None:
        self.fallbacks[(from_target, to_target, why)] += 1

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

    def request(self, target: str, endpoint: str, outcome: str) -> None:
        self._requests.inc(1, tags={"target": target, "endpoint": endpoint, "outcome": outcome})

    def decision(self, ms: float) -> None:
        self._decision.observe(ms)

    def ttft(self, target: str, ms: float) -> None:
        self._ttft.observe(ms, tags={"target": target})

    def e2e(self, target: str, ms: float) -> None:
        self._e2e.observe(ms, tags={"target": target})

    def fallback(self, from_target: str, to_target: str, why: str) -> None:
        self._fallback.inc(1, tags={"from_target": from_target, "to_target": to_target, "why": why})

    def cost(self, target: str, usd: float) -> None:
        if usd > 0:
            self._cost.inc(usd, tags={"target": target})


def default_metrics() -> Any:
    """RayMetrics when running inside a Ray worker, NoMetrics otherwise."""
    try:
        import ray

        if ray.is_initialized():
            return RayMetrics()
    except ImportError:
        pass
    return NoMetrics()
