"""Offline replay of the serving objects: the registered policies and `policies.predictors`.

A router here is a (policy, predictor kind) pair, e.g. `cheapest-fit:knn`. For each split the predictor
is fitted on the train rows, saved as the artifact `tune train` writes, and loaded back through
`policies.config.build_quality`, the call serving makes for cluster.yaml's `quality:` section; the
policy comes from `build_policy(parse_policy(...))`. The only seam swapped is the prompt encoder: the
loaded predictor gets an embedder that returns the tuning lab's precomputed vectors for known prompts
(computed with the same encoder), so nothing is embedded twice. Each test prompt then goes through
`policy.decide(RouteRequest, StaticView)` once per setting of the policy's knob (`sweep_knob` /
`sweep_grid` of its config class), and the chosen target's *measured* quality and cost are scored.

Requests carry no latency bound and a static latency view, so only quality and cost decide, as the
offline data can say nothing about live load. Rejected requests score quality 0 at cost 0 and are
counted.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.tuning.datasets import RouteTable

CONTEXT = 10**9  # offline prompts are never cut by a context window: the table holds their answers
# Knobs for policies whose config class does not name one yet (helper classes may lag the registry).
FALLBACK_KNOBS: dict[str, tuple[str, tuple[float, ...]]] = {
    "cheapest-fit": ("min_quality", tuple(round(i / 50, 2) for i in range(51))),
    "quality-threshold": ("threshold", tuple(round(i / 50, 2) for i in range(51))),
    "utility": ("cost_weight", (0.0, *(float(f"{10 ** (e / 8):.4g}") for e in range(-32, 25)))),
}


@dataclass
class RouterSpec:
    """One replayed router: a registered policy (with config overrides) over one predictor kind."""

    policy: str
    kind: str = "prior"
    policy_params: dict[str, Any] = field(default_factory=dict)
    predictor_params: dict[str, Any] = field(default_factory=dict)
    grid: tuple[float, ...] | None = None  # None: the config class's sweep_grid

    @property
    def name(self) -> str:
        return f"{self.policy}:{self.kind}"

    @classmethod
    def parse(cls, text: str, policy_params: Mapping[str, Mapping[str, Any]] | None = None,
              predictor_params: Mapping[str, Mapping[str, Any]] | None = None) -> RouterSpec:
        """`cheapest-fit:knn` (a bare policy name means its prior predictor)."""
        policy, _, kind = text.partition(":")
        kind = kind or "prior"
        return cls(policy, kind, dict((policy_params or {}).get(policy, {})),
                   dict((predictor_params or {}).get(kind, {})))


class _LatencyFlat:
    """Every target answers alike: the offline data has no live load to route around."""

    def predict(self, target: Any, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        return 100.0, 1000.0


class TableEmbedder:
    """The predictor's encoder seam: known prompts get their precomputed row, others are encoded with
    the same tuning encoder (so a transformed or new prompt still gets real features)."""

    def __init__(self, prompts: Sequence[str], emb: np.ndarray, encoder: Any = None) -> None:
        self._index = {p: i for i, p in enumerate(prompts)}
        self._emb = np.asarray(emb, dtype=np.float32)
        self._encoder = encoder

    def embed_one(self, prompt: str) -> np.ndarray:
        i = self._index.get(prompt)
        if i is not None:
            return self._emb[i]
        return self.embed([prompt])[0]

    def embed(self, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = [self._index.get(p) for p in prompts]
        if all(r is not None for r in rows):
            return self._emb[np.array(rows, dtype=int)]
        if self._encoder is None:
            raise KeyError("prompt not in the replayed table and no encoder to embed it")
        from policies.tuning.embed import get_encoder

        enc = get_encoder(self._encoder) if isinstance(self._encoder, str) else self._encoder
        return np.asarray(enc.encode(list(prompts)), dtype=np.float32)


class MemoQuality:
    """The loaded predictor, asked once per (prompt, targets): a knob sweep asks the same question many
    times and the answer does not depend on the knob. Other attributes pass through untouched."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._memo: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        if callable(getattr(inner, "support", None)):  # only if the predictor has it (policies probe)
            memo: dict[str, float] = {}

            def support(prompt: str) -> float:
                if prompt not in memo:
                    memo[prompt] = inner.support(prompt)
                return memo[prompt]

            self.support = support

    def predict(self, prompt: str, targets: Sequence[Any]) -> dict[str, float]:
        key = (prompt, tuple(t.id for t in targets))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self.inner.predict(prompt, targets)
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def policy_targets(table: RouteTable, train_rows: np.ndarray,
                   prices: dict[str, tuple[float, float]] | None = None) -> list[Any]:
    """`Target`s as cluster.yaml would declare them: list prices, and the train rows' mean quality as
    each target's quality_prior (used only for targets a predictor does not cover)."""
    from policies.types import Target

    lp = table.list_prices(prices)
    mean = table.quality[train_rows].mean(axis=0) if len(train_rows) else np.full(len(table.targets), 0.5)
    return [Target(id=t, kind="local", input_price_per_mtok=lp[t][0], output_price_per_mtok=lp[t][1],
                   context_window=CONTEXT, quality_prior=float(np.clip(mean[j], 0.0, 1.0)))
            for j, t in enumerate(table.targets)]


def requests(table: RouteTable, rows: np.ndarray, train_rows: np.ndarray) -> list[Any]:
    """The RouteRequest serving would build for each row: its prompt, its input tokens, and the output
    length the table's costs assume (else the train rows' mean)."""
    from policies.types import RouteRequest

    tin = table.prompt_tokens()
    out_tok = table.subset(train_rows).output_tokens() if len(train_rows) else table.output_tokens()
    return [RouteRequest(prompt=table.prompts[i], prompt_tokens=int(round(tin[i])),
                         expected_output_tokens=out_tok) for i in rows]


def sweep_of(policy: str) -> tuple[str | None, tuple[float, ...]]:
    """(knob, grid) from the policy's config class, else FALLBACK_KNOBS, else no knob."""
    import policies.config  # noqa: F401  (registers the built-in policies)
    from policies.registry import registered

    reg = registered()
    if policy not in reg:
        raise ValueError(f"unknown policy {policy!r}; known: {sorted(reg)}")
    cfg_cls = reg[policy][0]
    knob = getattr(cfg_cls, "sweep_knob", None)
    grid = tuple(getattr(cfg_cls, "sweep_grid", ()) or ())
    if knob is None and policy in FALLBACK_KNOBS and not hasattr(cfg_cls, "sweep_knob"):
        knob, grid = FALLBACK_KNOBS[policy]
    return knob, grid


def base_policy_config(spec: RouterSpec, table: RouteTable, train_rows: np.ndarray,
                       costs: np.ndarray) -> dict[str, Any]:
    """The policy's config dict before the knob: required target fields filled from the train rows
    (strong = best train quality, weak = the cheapest, `target` = the best), and `best_effort` where
    the policy can reject, so a strict setting sends unsure requests to the best-predicted target
    instead of refusing them (calibrate's snippet says so)."""
    from policies.registry import registered

    cfg_cls = registered()[spec.policy][0]
    fields = cfg_cls.model_fields
    q = table.quality[train_rows].mean(axis=0)
    c = costs[train_rows].mean(axis=0)
    order = sorted(range(len(table.targets)), key=lambda j: (-q[j], c[j]))
    best = table.targets[order[0]]
    cheap = table.targets[min(range(len(table.targets)), key=lambda j: (c[j], -q[j]))]
    if cheap == best:  # the best is also the cheapest: compare it with the next best
        cheap = table.targets[order[1]] if len(order) > 1 else best
    cfg: dict[str, Any] = {"name": spec.policy}
    for name, val in (("strong", best), ("weak", cheap), ("target", best)):
        if name in fields and fields[name].is_required():
            cfg[name] = val
    if "on_unsatisfiable" in fields:
        cfg["on_unsatisfiable"] = "best_effort"
    cfg.update(spec.policy_params)
    return cfg


def with_knob(cfg: dict[str, Any], knob: str | None, value: float | None) -> tuple[dict[str, Any], Any]:
    """(policy config, request constraints) for one knob value: a config field if the config has it,
    else a per-request constraint (e.g. min_quality on old cheapest-fit configs)."""
    from policies.registry import registered
    from policies.types import Constraints

    if knob is None or value is None:
        return cfg, Constraints()
    fields = registered()[cfg["name"]][0].model_fields
    if knob in fields:
        return {**cfg, knob: value}, Constraints()
    if knob in Constraints.model_fields:
        return cfg, Constraints(**{knob: value})
    raise ValueError(f"policy {cfg['name']!r}: knob {knob!r} is neither a config field nor a constraint")


def quality_config(kind: str, predictor: Any, artifact_dir: Path) -> dict[str, Any]:
    """cluster.yaml's `quality:` section for a fitted predictor (writes the artifact if it has one)."""
    from policies.config import QUALITY_ADAPTER

    if kind == "prior":
        return {"kind": "prior", "table": dict(predictor.table)}
    predictor.save(artifact_dir)
    cfg = {"kind": kind, "artifact": str(artifact_dir)}
    QUALITY_ADAPTER.validate_python(cfg)  # an unknown kind fails here, before any replay
    return cfg


def load_quality(qcfg: dict[str, Any], targets: Sequence[Any], embedder: Any) -> Any:
    """What serving does with cluster.yaml's `quality:` section, with the encoder seam given."""
    from policies.config import build_quality, parse_quality

    return build_quality(parse_quality(qcfg), targets, embedder=embedder)


def decide_all(policy_cfg: dict[str, Any], constraints: Any, reqs: Sequence[Any], targets: Sequence[Any],
               quality: Any) -> list[str | None]:
    """Chosen target id (None = rejected) of each request under one policy config."""
    from policies.base import StaticView
    from policies.config import build_policy, parse_policy

    policy = build_policy(parse_policy(policy_cfg))
    view = StaticView(targets, _LatencyFlat(), quality)
    if constraints is not None and constraints.model_dump(exclude_defaults=True):
        reqs = [r.model_copy(update={"constraints": constraints}) for r in reqs]
    return [policy.decide(r, view).target for r in reqs]


@dataclass
class Fitted:
    """One split's predictor as serving loads it, and what it needs to decide."""

    targets: list[Any]
    quality: Any  # MemoQuality over the loaded predictor
    quality_cfg: dict[str, Any]
    requests: list[Any]
    rows: np.ndarray  # the split's test rows (table indices)
    train_rows: np.ndarray


def fit_split(table: RouteTable, emb: np.ndarray | None, kind: str, params: Mapping[str, Any],
              train_rows: np.ndarray, test_rows: np.ndarray, workdir: Path,
              prices: dict[str, tuple[float, float]] | None = None, encoder: Any = None) -> Fitted:
    """Fit the predictor on the train rows, save it, load it the serving way (seam: the embedder)."""
    from policies.tuning.train import fit

    targets = policy_targets(table, train_rows, prices)
    train = table.subset(train_rows)
    if kind == "prior" or emb is None:
        if kind != "prior":
            raise ValueError(f"predictor {kind!r} needs embeddings")
        pred = fit(train, np.zeros((len(train), 1), np.float32), "prior", **params)
    else:
        pred = fit(train, emb[train_rows], kind, **params)
    qcfg = quality_config(kind, pred, workdir)
    embedder = None if emb is None else TableEmbedder([table.prompts[i] for i in test_rows], emb[test_rows],
                                                      encoder)
    loaded = load_quality(qcfg, targets, embedder)
    return Fitted(targets, MemoQuality(loaded), qcfg, requests(table, test_rows, train_rows), test_rows,
                  train_rows)


def replay(spec: RouterSpec, fitted: Sequence[Fitted], table: RouteTable, costs: np.ndarray,
           knob_values: Sequence[float | None] | None = None, progress: bool = False) -> dict[str, Any]:
    """Sweep one router's knob over all splits; per setting, the choices of every evaluated row.

    Returns {knob, values, choice (len(values), n_eval) column index or -1 = rejected, rows}."""
    from tqdm import tqdm

    knob, grid = sweep_of(spec.policy)
    values: list[float | None] = list(knob_values if knob_values is not None else (spec.grid or grid))
    if knob is None or not values:
        knob, values = None, [None]
    rows = np.concatenate([f.rows for f in fitted])
    col = {t: j for j, t in enumerate(table.targets)}
    choice = np.full((len(values), len(rows)), -1, dtype=int)
    bases = [base_policy_config(spec, table, f.train_rows, costs) for f in fitted]
    bar = tqdm(total=len(values) * len(fitted), desc=f"replaying {spec.name}", file=sys.stderr,
               disable=not progress, leave=False)
    for vi, v in enumerate(values):
        start = 0
        for f, base in zip(fitted, bases, strict=True):
            cfg, cons = with_knob(base, knob, v)
            ids = decide_all(cfg, cons, f.requests, f.targets, f.quality)
            choice[vi, start:start + len(ids)] = [col[t] if t is not None else -1 for t in ids]
            start += len(ids)
            bar.update()
    bar.close()
    return {"knob": knob, "values": values, "choice": choice, "rows": rows, "base_config": bases[0]}


def outcomes(choice: np.ndarray, rows: np.ndarray, quality: np.ndarray, costs: np.ndarray,
             targets: Sequence[str]) -> dict[str, np.ndarray]:
    """Mean measured quality, cost, rejected share and per-target shares of each setting."""
    q, c = quality[rows], costs[rows]
    idx = np.clip(choice, 0, None)
    got_q = np.take_along_axis(np.broadcast_to(q, (len(choice), *q.shape)), idx[..., None], 2)[..., 0]
    got_c = np.take_along_axis(np.broadcast_to(c, (len(choice), *c.shape)), idx[..., None], 2)[..., 0]
    rejected = choice < 0
    got_q, got_c = np.where(rejected, 0.0, got_q), np.where(rejected, 0.0, got_c)
    shares = np.stack([(choice == j).mean(axis=1) for j in range(len(targets))], axis=1)
    return {"quality": got_q.mean(axis=1), "cost": got_c.mean(axis=1), "rejected": rejected.mean(axis=1),
            "shares": shares}


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="router-replay-")
