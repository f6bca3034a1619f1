"""The app builder `router.app:build(args)`, used by `serve run cluster.yaml`.

Everything that can be wrong is checked here, in the `serve run` process, before any deployment
starts: the args (field-level messages), each model's source, and that GGUF models are prepared.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from router.validate import ConfigError, model_problems, parse_args

log = logging.getLogger("router")


def build(args: dict[str, Any]) -> Any:
    """Validate args and bind: one deployment per local model and per enabled provider, and the ingress."""
    from deployments.prepare import model_path
    from router.ingress import RouterIngress

    cfg = parse_args(args)
    problems = model_problems(cfg, "args", require_prepared=True)
    if problems:
        raise ConfigError(problems)

    providers = tuple(p for p in cfg.providers if os.environ.get(p.api_key_env))
    for p in cfg.providers:
        if p not in providers:
            log.warning(
                "fallback provider '%s' disabled: environment variable %s is not set", p.id, p.api_key_env
            )
    if cfg.providers and not providers:
        log.warning("no proprietary fallback: requests that no local model fits are rejected")
    if not cfg.models and not providers:
        raise ConfigError(["args: no local model and no provider with its API key set: nothing can answer"])

    handles: dict[str, Any] = {}
    if cfg.models:
        from deployments.vllm import build_model_deployment, omp_bind

        cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
        binds = omp_bind(list(cfg.models))
        for m in cfg.models:
            handles[m.id] = build_model_deployment(m, model_path(m.id, m.source, cache), binds.get(m.id))
    if providers:
        from deployments.provider import ProviderDeployment

        for p in providers:
            handles[p.id] = ProviderDeployment.options(
                name=f"provider-{p.id}", ray_actor_options={"num_cpus": 0.05}
            ).bind(p.model_dump(mode="json"))

    enabled = cfg.model_copy(update={"providers": providers})
    log.info(
        "router: local models %s, fallback providers %s, policy %s",
        [m.id for m in cfg.models],
        [p.id for p in providers] or "none",
        cfg.policy.name,
    )
    return RouterIngress.options(  # type: ignore[attr-defined]  # a Serve Deployment at runtime
        num_replicas=cfg.ingress.num_replicas,
        max_ongoing_requests=cfg.ingress.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.ingress.num_cpus},
    ).bind(enabled.model_dump(mode="json"), handles)
