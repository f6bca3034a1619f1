"""The application's typed arguments: everything under `args:` of the router app in cluster.yaml.

Frozen pydantic models, extra="forbid", a description on every field, no I/O. `expand_env` is the
one place environment variables enter the config (`${VAR}` / `${VAR:-default}` in strings), so
cluster.yaml can name OPENAI_BASE_URL without hard-coding it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.local_config import LocalModelConfig
from deployments.provider import ProviderConfig
from policies.config import LatencyConfig, PolicyConfig, QualityConfig
from policies.types import Target
from router.auth import AuthConfig
from router.limits import LimitsConfig
from router.telemetry import TelemetryConfig

_STRICT = ConfigDict(frozen=True, extra="forbid")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class IngressConfig(BaseModel):
    model_config = _STRICT

    num_replicas: int = Field(1, ge=1, description="Router ingress replicas.")
    max_ongoing_requests: int = Field(256, ge=1, description="Requests one ingress replica takes at once.")
    num_cpus: float = Field(0.1, gt=0, description="num_cpus of an ingress replica actor.")
    health_poll_s: float = Field(1.0, gt=0, description="How often the ingress polls provider breakers.")
    replica_poll_s: float = Field(
        2.0, gt=0, description="How often the ingress asks Serve which model deployments have running replicas."
    )
    wake_timeout_s: float = Field(
        900.0, gt=0, description="How long a wake-up call to a model scaled to zero may wait for its replica."
    )
    metrics_flush_s: float = Field(
        1.0, gt=0, le=60, description="How often buffered metrics go to the exporter (off the request path)."
    )


class AppConfig(BaseModel):
    """Arguments of `router.app:build`."""

    model_config = _STRICT

    models: tuple[LocalModelConfig, ...] = Field((), description="Local vLLM models, cheapest first.")
    providers: tuple[ProviderConfig, ...] = Field(
        (), description="Proprietary OpenAI-compatible providers, in fallback order."
    )
    policy: PolicyConfig = Field(
        default_factory=lambda: _default_policy(), description="Routing policy (by `name`)."
    )
    quality: QualityConfig = Field(
        default_factory=lambda: _default_quality(), description="Quality predictor (by `kind`)."
    )
    latency: LatencyConfig = Field(
        default_factory=lambda: LatencyConfig(), description="Latency estimator settings."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Bearer keys; none = open endpoint.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request size and retry limits.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="Tracing export.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="Ingress deployment.")
    cache_dir: str | None = Field(None, description="Prepared-model cache (default ~/.cache/llm-router).")

    @model_validator(mode="after")
    def _check(self) -> AppConfig:
        ids = [m.id for m in self.models] + [p.id for p in self.providers]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"target ids must be unique; repeated: {', '.join(dupes)}")
        if "auto" in ids:
            raise ValueError("'auto' is reserved for routing and cannot be a target id")
        if not ids:
            raise ValueError("configure at least one model or provider")
        apps = [m.app for m in self.models if m.app is not None]
        shared = sorted({a for a in apps if apps.count(a) > 1})
        if shared:
            raise ValueError(f"each model needs an application of its own; shared: {', '.join(shared)}")
        known = set(ids)
        for field in ("target", "strong", "weak"):
            ref = getattr(self.policy, field, None)
            if isinstance(ref, str) and ref not in known:
                raise ValueError(f"policy.{field}: unknown target '{ref}' (known: {', '.join(ids)})")
        return self

    def targets(self) -> list[Target]:
        """Targets the policy sees: local models in config order, then providers in fallback order."""
        return [m.target() for m in self.models] + [p.target() for p in self.providers]


def _default_policy() -> PolicyConfig:
    from pydantic import TypeAdapter

    return TypeAdapter(PolicyConfig).validate_python({"name": "cheapest-fit"})


def _default_quality() -> QualityConfig:
    from pydantic import TypeAdapter

    return TypeAdapter(QualityConfig).validate_python({"kind": "prior"})


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a nested config value."""
    env = dict(os.environ) if env is None else env
    if isinstance(value, str):
        return _ENV.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expand_env(v, env) for v in value]
    return value
