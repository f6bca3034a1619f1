"""The app builders used by `serve run cluster.yaml`: `router.app:build` (the router) and
`router.app:build_model` (one local model as its own Serve application).

Everything that can be wrong is checked here, in the `serve run` process, before any deployment
starts: the args (field-level messages), each model's source, and that GGUF models are prepared.

Why models get applications of their own: Serve versions all deployments of an application together
(the version hashes the application's args), so with the engines inside the router's app a changed
policy threshold or API key restarted every engine. A model whose entry names `app:` is not bound here;
the ingress calls it by deployment handle in that application (docs/router.md "What restarts what").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from router.validate import ConfigError, model_problems, parse_args, problems_of

log = logging.getLogger("router")


def model_deployment_name(model_id: str) -> str:
    """The Serve deployment serving a local model, in the router's app or in the model's own app."""
    return f"model-{model_id}"


def build(args: dict[str, Any]) -> Any:
    """The router application of cluster.yaml. Serve calls builders with exactly one parameter (it
    refuses any other signature), so the test seams live in `build_router`."""
    return build_router(args)


def build_router(
    args: dict[str, Any],
    *,
    bind_engine: Callable[[Any], Any] | None = None,
    ingress_actor_options: dict[str, Any] | None = None,
) -> Any:
    """Validate args and bind the ingress, plus one deployment per local model that has no application
    of its own, and the budget ledger. Providers get no deployment: the ingress calls them itself.

    Test seams (Serve calls `build(args)` only): `bind_engine(model entry)` may return a bound
    deployment to serve that model instead of vLLM (the reliability suite's fake engine; its source is
    then not checked), or None for the real engine; `ingress_actor_options` are merged into the
    ingress's ray_actor_options (e.g. custom resources pinning it to a node).
    """
    from deployments.prepare import model_path
    from router.ingress import RouterIngress
    from router.ledger import bind_ledger

    cfg = parse_args(args)
    inline = [m for m in cfg.models if m.app is None]
    substitutes = {m.id: b for m in inline if bind_engine and (b := bind_engine(m)) is not None}
    inline = [m for m in inline if m.id not in substitutes]
    checked = cfg.model_copy(update={"models": tuple(m for m in cfg.models if m.id not in substitutes)})
    problems = model_problems(checked, "args", require_prepared=True)
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

    handles: dict[str, Any] = dict(substitutes)
    if inline:
        from deployments.vllm import build_model_deployment, omp_bind

        binds = omp_bind(list(inline))
        for m in inline:
            cache = _cache(m.cache_dir or cfg.cache_dir)
            handles[m.id] = build_model_deployment(m, model_path(m.id, m.source, cache), binds.get(m.id))

    enabled = cfg.model_copy(update={"providers": providers})
    log.info(
        "router: local models %s (own applications: %s), fallback providers %s, policy %s",
        [m.id for m in cfg.models],
        [m.app for m in cfg.models if m.app] or "none",
        [p.id for p in providers] or "none",
        cfg.policy.name,
    )
    return RouterIngress.options(  # type: ignore[attr-defined]  # a Serve Deployment at runtime
        num_replicas=cfg.ingress.num_replicas,
        max_ongoing_requests=cfg.ingress.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.ingress.num_cpus, **(ingress_actor_options or {})},
    ).bind(enabled.model_dump(mode="json"), handles, bind_ledger(cfg.auth.ledger))


def parse_engine(args: dict[str, Any] | None, prefix: str = "args") -> Any:
    """A model application's args as an EngineConfig; ConfigError naming the fields otherwise."""
    from deployments.local_config import EngineConfig
    from router.config import expand_env

    try:
        return EngineConfig.model_validate(expand_env(args or {}))
    except ValidationError as e:
        raise ConfigError(problems_of(e, prefix)) from None


def build_model(args: dict[str, Any]) -> Any:
    """One local model as its own application: args are its engine part (deployments.local_config)."""
    from deployments.prepare import ModelSourceError, is_prepared, model_path, prepared_dir, resolve
    from deployments.vllm import build_model_deployment, omp_bind

    m = parse_engine(args)
    cache = _cache(m.cache_dir)
    try:
        r = resolve(m.source, cache)
    except ModelSourceError as e:
        raise ConfigError([f"args.source: {e}"]) from None
    if r.kind == "gguf" and not is_prepared(prepared_dir(m.id, m.source, cache)):
        raise ConfigError([f"args.source: model '{m.id}' is not prepared; run `routerctl prepare-models CONFIG`"])
    log.info("model application for '%s' (source %s)", m.id, m.source)
    return build_model_deployment(m, model_path(m.id, m.source, cache), omp_bind([m]).get(m.id))


def _cache(cache_dir: str | None) -> Path | None:
    return Path(cache_dir).expanduser() if cache_dir else None
