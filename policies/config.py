"""Typed configuration of the policy engine and the builders that turn it into objects.

- `PolicyConfig`: discriminated union on `name` over every registered policy's config model. Each config
  class carries ClassVars `sweep_knob` (field the tuning lab sweeps, or None) and `sweep_grid` (values);
  `policies.registry.sweep_of(cfg)` reads both.
- `QualityConfig`: discriminated union on `kind`: prior | knn | logistic | mf | irt | ensemble (trained
  ones name an `artifact` directory written by the predictor's `save`).
- `LatencyConfig`: quantile and decay of the live latency estimator.

`build_policy(cfg)` and `build_quality(cfg, targets)` are the only places that construct these objects;
the config models themselves do no I/O (loading an artifact happens in `build_quality`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from policies.base import Policy, QualityPredictor
from policies.baselines import (
    AlwaysCheapestConfig,
    AlwaysConfig,
    AlwaysStrongestConfig,
    QualityThresholdConfig,
    RandomConfig,
    RoundRobinConfig,
)
from policies.cascade import CascadeConfig
from policies.cheapest_fit import CheapestFitConfig
from policies.latency import LatencyConfig, LatencyEstimator
from policies.registry import policy_class, registered
from policies.types import Target
from policies.utility import UtilityConfig

PolicyConfig = Annotated[
    CheapestFitConfig
    | UtilityConfig
    | CascadeConfig
    | AlwaysConfig
    | AlwaysCheapestConfig
    | AlwaysStrongestConfig
    | RandomConfig
    | RoundRobinConfig
    | QualityThresholdConfig,
    Field(discriminator="name"),
]

_CFG = ConfigDict(frozen=True, extra="forbid")


class PriorQualityConfig(BaseModel):
    """Fixed P(acceptable) per target: this table, else each target's own quality_prior."""

    model_config = _CFG
    kind: Literal["prior"] = Field("prior", description="Predictor kind (discriminator).")
    table: dict[str, float] = Field(
        default_factory=dict, description="P(acceptable) by target id, overriding Target.quality_prior."
    )


class _TrainedQualityConfig(BaseModel):
    model_config = _CFG
    artifact: str = Field(..., min_length=1, description="Directory written by the predictor's save().")
    embed_cache_size: int = Field(4096, ge=0, description="Prompts whose embeddings are kept (LRU).")
    encoder: Literal["minilm", "static"] | None = Field(
        None,
        description="Prompt featurizer. None: the one the artifact was trained on (its featurizer.json; "
        "minilm if absent). `static` (MiniLM distilled into token vectors, `routerctl tune featurizer "
        "build`) costs ~0.1 ms a prompt instead of ~45 ms. Must match the artifact.",
    )
    embed_threads: int | None = Field(
        1,
        ge=1,
        description="torch threads for the encoder (process-wide; None = torch default). 1 because on a "
        "shared 2-core machine 2 threads made one embedding 12x slower (536 ms vs 43 ms p50).",
    )
    offload: Literal["auto", "worker", "batched", "inline"] = Field(
        "auto",
        description="Where the ingress computes a new prompt's prediction before the decision: "
        "`worker` (a worker thread, one call per prompt), `batched` (the worker; prompts that arrive "
        "while a call runs share the next call), `inline` (on the event loop, every prompt), `auto` "
        "(inline for a logistic, mf or irt predictor on the static featurizer when the prompt has at "
        "most `inline_max_chars` characters, ~0.1 ms of work; the worker otherwise). A hand-off to "
        "the worker costs far more than such a prediction on a busy ingress (BENCHMARKS.md).",
    )
    inline_max_chars: int = Field(
        1000, ge=0, description="`offload: auto`: the longest prompt computed on the event loop."
    )
    switch_interval_ms: float | None = Field(
        None,
        gt=0,
        description="Python's thread switch interval for the ingress process serving this predictor "
        "(sys.setswitchinterval; None = Python's 5 ms): how long the event loop and the worker may "
        "wait for each other's hold on the interpreter lock.",
    )


class KNNQualityConfig(_TrainedQualityConfig):
    """k-nearest-neighbour over embedded training prompts."""

    kind: Literal["knn"] = Field("knn", description="Predictor kind (discriminator).")


class LogisticQualityConfig(_TrainedQualityConfig):
    """Logistic regression / small MLP per target on prompt embeddings."""

    kind: Literal["logistic"] = Field("logistic", description="Predictor kind (discriminator).")


class MFQualityConfig(_TrainedQualityConfig):
    """RouteLLM-style matrix factorisation over (prompt embedding, target)."""

    kind: Literal["mf"] = Field("mf", description="Predictor kind (discriminator).")


class IRTQualityConfig(_TrainedQualityConfig):
    """IRT-style: target ability x prompt difficulty/discrimination predicted from the embedding."""

    kind: Literal["irt"] = Field("irt", description="Predictor kind (discriminator).")


class EnsembleQualityConfig(_TrainedQualityConfig):
    """Weighted mean of several embedding predictors (e.g. knn + logistic) over one embedding."""

    kind: Literal["ensemble"] = Field("ensemble", description="Predictor kind (discriminator).")


QualityConfig = Annotated[
    PriorQualityConfig
    | KNNQualityConfig
    | LogisticQualityConfig
    | MFQualityConfig
    | IRTQualityConfig
    | EnsembleQualityConfig,
    Field(discriminator="kind"),
]

POLICY_ADAPTER: TypeAdapter[Any] = TypeAdapter(PolicyConfig)
QUALITY_ADAPTER: TypeAdapter[Any] = TypeAdapter(QualityConfig)


def parse_policy(data: Any) -> Any:
    """Validate a dict (e.g. from cluster.yaml) into the matching policy config model."""
    return POLICY_ADAPTER.validate_python(data)


def parse_quality(data: Any) -> Any:
    """Validate a dict into the matching quality config model."""
    return QUALITY_ADAPTER.validate_python(data)


def build_policy(cfg: BaseModel) -> Policy:
    """A fresh policy object for a validated policy config (one of PolicyConfig's members)."""
    name = getattr(cfg, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"not a policy config: {cfg!r}")
    cls = policy_class(name)
    expected = registered()[name][0]
    if not isinstance(cfg, expected):
        raise TypeError(f"policy {name!r} takes a {expected.__name__}, got {type(cfg).__name__}")
    return cls(cfg)  # type: ignore[no-any-return]


def build_quality(cfg: BaseModel, targets: Sequence[Target], embedder: Any = None) -> QualityPredictor:
    """The quality predictor a config describes, for these targets (loads trained artifacts)."""
    from policies.predictors import KINDS, PriorPredictor

    ids = {t.id for t in targets}
    if isinstance(cfg, PriorQualityConfig):
        unknown = sorted(set(cfg.table) - ids)
        if unknown:
            raise ValueError(f"quality prior table names unknown targets: {unknown}")
        return PriorPredictor({**{t.id: t.quality_prior for t in targets}, **cfg.table})
    if isinstance(cfg, _TrainedQualityConfig):
        if embedder is None:
            from policies.predictors.featurizers import embedder_for

            embedder = embedder_for(cfg.artifact, cfg.encoder, cache_size=cfg.embed_cache_size,
                                    threads=cfg.embed_threads)
        pred = KINDS[cfg.kind].load(cfg.artifact, embedder=embedder)  # type: ignore[attr-defined]
        if not set(pred.targets) & ids:
            raise ValueError(f"artifact {cfg.artifact} covers none of the targets {sorted(ids)}")
        return pred  # type: ignore[no-any-return]
    raise TypeError(f"not a quality config: {cfg!r}")


def build_latency(cfg: LatencyConfig | None, targets: Sequence[Target]) -> LatencyEstimator:
    """A live latency estimator seeded with the targets' cold-start priors."""
    return LatencyEstimator(list(targets), cfg or LatencyConfig())


__all__ = [
    "AlwaysCheapestConfig",
    "AlwaysConfig",
    "AlwaysStrongestConfig",
    "CascadeConfig",
    "CheapestFitConfig",
    "EnsembleQualityConfig",
    "IRTQualityConfig",
    "KNNQualityConfig",
    "LatencyConfig",
    "LogisticQualityConfig",
    "MFQualityConfig",
    "PolicyConfig",
    "PriorQualityConfig",
    "QualityConfig",
    "QualityThresholdConfig",
    "RandomConfig",
    "RoundRobinConfig",
    "UtilityConfig",
    "build_latency",
    "build_policy",
    "build_quality",
    "parse_policy",
    "parse_quality",
]
