"""Shared steps of every policy: which targets may take a request, and what each would deliver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies.base import RoutingView
from policies.types import Constraints, Estimate, RouteRequest, Target

# Names used in Estimate.why_not and in reasons: the Constraints field that fails.
MIN_QUALITY = "min_quality"
MAX_LATENCY = "max_latency_ms"
MAX_COST = "max_cost_usd"


def eligible(request: RouteRequest, view: RoutingView) -> tuple[list[Target], list[str]]:
    """Targets that may take the request at all, in config order, and why the others may not.

    Eligible = allowed by the caller, healthy, prompt + output fit the context window, and (for api
    targets) fallback allowed. The second list holds short reasons for healthy-looking exclusions
    ('unhealthy', 'context_window', 'no-fallback') so a rejection can say what happened.
    """
    c = request.constraints
    allowed = set(c.allowed_targets) if c.allowed_targets is not None else None
    need = request.prompt_tokens + request.output_tokens
    out: list[Target] = []
    excluded: list[str] = []
    for t in view.targets:
        if allowed is not None and t.id not in allowed:
            continue
        if t.kind == "api" and not c.allow_fallback:
            excluded.append("no-fallback")
        elif not view.healthy(t.id):
            excluded.append("unhealthy")
        elif t.context_window < need:
            excluded.append("context_window")
        else:
            out.append(t)
    return out, excluded


def why_not(c: Constraints, quality: float, latency_ms: float, cost_usd: float) -> str | None:
    """First constraint a prediction breaks (quality, then latency, then cost), or None."""
    if c.min_quality is not None and quality < c.min_quality:
        return MIN_QUALITY
    if c.max_latency_ms is not None and latency_ms > c.max_latency_ms:
        return MAX_LATENCY
    if c.max_cost_usd is not None and cost_usd > c.max_cost_usd:
        return MAX_COST
    return None


def estimate(
    request: RouteRequest,
    view: RoutingView,
    targets: Sequence[Target],
    quality: Mapping[str, float] | None = None,
) -> list[Estimate]:
    """One Estimate per target (same order): predicted quality, TTFT, e2e, cost, and fit.

    `quality` = predictions the caller already has ({target: P(ok)}); None = ask `view.quality`.
    """
    if not targets:
        return []
    c = request.constraints
    if quality is None:
        quality = view.quality.predict(request.prompt, targets)
    lat = view.latency
    p_tok, o_tok = request.prompt_tokens, request.output_tokens
    use_ttft = c.latency_metric == "ttft"
    out = []
    for t in targets:
        q = quality.get(t.id, t.quality_prior)
        ttft, e2e = lat.predict(t, p_tok, o_tok)
        cost = (p_tok * t.input_price_per_mtok + o_tok * t.output_price_per_mtok) / 1e6  # expected_cost_usd
        bad = why_not(c, q, ttft if use_ttft else e2e, cost)
        out.append(_make(t.id, q, ttft, e2e, cost, bad))
    return out


_FIELDS = frozenset(Estimate.model_fields)
_set = object.__setattr__


def _make_fast(target: str, q: float, ttft: float, e2e: float, cost: float, bad: str | None) -> Estimate:
    # What model_construct does, minus its generic per-field loop: an Estimate per target per decision
    # is the largest cost of a decision (model_construct 12 µs, validation 6 µs, this 3 µs on the
    # loaded benchmark machine). Every value is computed above, so skipping validation is safe.
    e = object.__new__(Estimate)
    _set(e, "__dict__", {"target": target, "quality": q, "ttft_ms": ttft, "e2e_ms": e2e,
                         "cost_usd": cost, "fits": bad is None, "why_not": bad})
    _set(e, "__pydantic_fields_set__", _FIELDS)
    _set(e, "__pydantic_extra__", None)
    _set(e, "__pydantic_private__", None)
    return e


def _make_checked(target: str, q: float, ttft: float, e2e: float, cost: float, bad: str | None) -> Estimate:
    return Estimate(target=target, quality=q, ttft_ms=ttft, e2e_ms=e2e, cost_usd=cost, fits=bad is None,
                    why_not=bad)


def _pick_maker():  # type: ignore[no-untyped-def]
    """Use the fast path only if it builds exactly what validation builds (guards pydantic upgrades)."""
    args = ("t", 0.5, 1.0, 2.0, 0.1, None)
    try:
        fast, ref = _make_fast(*args), _make_checked(*args)
        if fast == ref and fast.model_dump() == ref.model_dump() and repr(fast) == repr(ref):
            return _make_fast
    except Exception:  # pragma: no cover - only on an incompatible pydantic
        pass
    return _make_checked  # pragma: no cover


_make = _pick_maker()


def latency_of(e: Estimate, c: Constraints) -> float:
    """The latency the request's constraint is about."""
    return e.ttft_ms if c.latency_metric == "ttft" else e.e2e_ms


def violation(e: Estimate, c: Constraints) -> float:
    """How far an estimate misses the constraints, as a sum of relative shortfalls (0 = fits)."""
    v = 0.0
    if c.min_quality is not None and e.quality < c.min_quality:
        v += (c.min_quality - e.quality) / max(c.min_quality, 1e-9)
    lat = latency_of(e, c)
    if c.max_latency_ms is not None and lat > c.max_latency_ms:
        v += (lat - c.max_latency_ms) / c.max_latency_ms
    if c.max_cost_usd is not None and e.cost_usd > c.max_cost_usd:
        v += (e.cost_usd - c.max_cost_usd) / max(c.max_cost_usd, 1e-12)
    return v
