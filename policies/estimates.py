"""Shared steps of every policy: which targets may take a request, and what each would deliver."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policies.base import LatencyView, RoutingView
from policies.types import Constraints, Estimate, RouteRequest, Target

# Names used in Estimate.why_not and in reasons: the Constraints field that fails.
MIN_QUALITY = "min_quality"
MAX_LATENCY = "max_latency_ms"
MAX_COST = "max_cost_usd"


class TargetTable:
    """Per-target constants of one target list, computed once per list (not once per decision)."""

    __slots__ = ("targets", "kind", "index")

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = targets
        self.kind = {t.id: t.kind for t in targets}
        self.index = {t.id: i for i, t in enumerate(targets)}  # config order: the last tie-break


_TABLES: dict[int, TargetTable] = {}


def target_table(targets: Sequence[Target]) -> TargetTable:
    """The TargetTable of a view's target list. Views hand out the same list on every call, so this is
    a dict lookup; the table keeps its list alive, so the id cannot be reused while it is cached."""
    table = _TABLES.get(id(targets))
    if table is None or table.targets is not targets:
        if len(_TABLES) >= 64:  # views that build a new list per call must not grow this
            _TABLES.clear()
        table = _TABLES[id(targets)] = TargetTable(targets)
    return table


def eligible(request: RouteRequest, view: RoutingView) -> tuple[list[Target], list[str]]:
    """Targets that may take the request at all, in config order, and why the others may not.

    Eligible = allowed by the caller, healthy, prompt + output fit the context window, and (for api
    targets) fallback allowed. The second list holds short reasons for healthy-looking exclusions
    ('unhealthy', 'context_window', 'no-fallback') so a rejection can say what happened.
    """
    c = request.constraints
    allowed = set(c.allowed_targets) if c.allowed_targets is not None else None
    need = request.prompt_tokens + request.output_tokens
    fallback = c.allow_fallback
    healthy = view.healthy
    out: list[Target] = []
    excluded: list[str] = []
    for t in view.targets:
        if allowed is not None and t.id not in allowed:
            continue
        if not fallback and t.kind == "api":
            excluded.append("no-fallback")
        elif not healthy(t.id):
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


class Candidate:
    """What a policy knows of one eligible target during a decision: `Estimate`'s fields, as a plain
    object. Policies rank these; `explained` turns them into `Estimate`s for `Decision.candidates`
    only when the request asks for it (`RouteRequest.explain`), as the trace span does."""

    __slots__ = ("target", "quality", "ttft_ms", "e2e_ms", "cost_usd", "fits", "why_not")

    def __init__(self, target: str, quality: float, ttft_ms: float, e2e_ms: float, cost_usd: float,
                 why_not: str | None) -> None:
        self.target, self.quality, self.ttft_ms, self.e2e_ms = target, quality, ttft_ms, e2e_ms
        self.cost_usd, self.why_not, self.fits = cost_usd, why_not, why_not is None

    def to_estimate(self) -> Estimate:
        return _make(self.target, self.quality, self.ttft_ms, self.e2e_ms, self.cost_usd, self.why_not)

    def __repr__(self) -> str:
        return f"Candidate({self.target!r}, q={self.quality}, e2e={self.e2e_ms}, cost={self.cost_usd})"


def explained(request: RouteRequest, cands: Sequence[Candidate]) -> tuple[Estimate, ...]:
    """`Decision.candidates`: every candidate's Estimate when the request asks for them, else ()."""
    return tuple(e.to_estimate() for e in cands) if request.explain else ()


def estimate(
    request: RouteRequest,
    view: RoutingView,
    targets: Sequence[Target],
    quality: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """One Candidate per target (same order): predicted quality, TTFT, e2e, cost, and fit.

    `quality` = predictions the caller already has ({target: P(ok)}); None = ask `view.quality`.
    """
    if not targets:
        return []
    c = request.constraints
    if quality is None:
        quality = view.quality.predict(request.prompt, targets)
    p_tok, o_tok = request.prompt_tokens, request.output_tokens
    use_ttft = c.latency_metric == "ttft"
    lats = predict_all(view.latency, targets, p_tok, o_tok)
    out = []
    for t, (ttft, e2e) in zip(targets, lats, strict=True):
        tid = t.id
        q = quality.get(tid, t.quality_prior)
        cost = (p_tok * t.input_price_per_mtok + o_tok * t.output_price_per_mtok) / 1e6  # expected_cost_usd
        bad = why_not(c, q, ttft if use_ttft else e2e, cost)
        out.append(Candidate(tid, q, ttft, e2e, cost, bad))
    return out


def predict_all(
    latency: LatencyView, targets: Sequence[Target], prompt_tokens: int, output_tokens: int
) -> Sequence[tuple[float, float]]:
    """`latency.predict` for every target: one call when the view's class offers `predict_many`
    (policies.latency.LatencyEstimator), else a call per target."""
    many = _batch_method(type(latency))
    if many is not None:
        return many(latency, targets, prompt_tokens, output_tokens)  # type: ignore[no-any-return]
    return [latency.predict(t, prompt_tokens, output_tokens) for t in targets]


_BATCH: dict[type, Callable[..., Any] | None] = {}


def _batch_method(cls: type) -> Callable[..., Any] | None:
    """The class's `predict_many` if it answers for its `predict`. The class is asked, not the object
    (a wrapper that forwards unknown attributes, like a cold-start adjustment, must not be bypassed),
    and a subclass that overrides `predict` alone keeps its per-target calls."""
    if cls not in _BATCH:
        def definer(name: str) -> int:
            return next((i for i, k in enumerate(cls.__mro__) if name in vars(k)), len(cls.__mro__))

        many = getattr(cls, "predict_many", None)
        _BATCH[cls] = many if many is not None and definer("predict_many") <= definer("predict") else None
    return _BATCH[cls]


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


def latency_of(e: Estimate | Candidate, c: Constraints) -> float:
    """The latency the request's constraint is about."""
    return e.ttft_ms if c.latency_metric == "ttft" else e.e2e_ms


def violation(e: Estimate | Candidate, c: Constraints) -> float:
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
