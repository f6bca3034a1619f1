"""The Serve ingress deployment: builds the RouterService in the replica and serves router.api's app.

The request path is proxy -> this replica -> one handle call to the chosen target: one hop, no more.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve

from deployments.handle_client import HandleClient
from policies.config import build_latency, build_policy, build_quality
from policies.types import Target
from router.api import make_app
from router.auth import KeyStore
from router.config import AppConfig
from router.metrics import BufferedMetrics, default_metrics
from router.service import RouterService
from router.telemetry import Telemetry
from router.view import LiveView

log = logging.getLogger("router")


def build_service(cfg: AppConfig, clients: Mapping[str, Any]) -> RouterService:
    """Wire config, clients, policy and live view together (also used by tests without Serve)."""
    targets = cfg.targets()
    view = LiveView(targets, build_latency(cfg.latency, per_ingress(targets, cfg.ingress.num_replicas)),
                    build_quality(cfg.quality, targets))
    auth = KeyStore.from_config(cfg.auth)
    if auth.open:
        log.warning("router: no API keys configured: the endpoint is open to anyone who can reach it")
    return RouterService(
        targets,
        clients,
        build_policy(cfg.policy),
        view,
        auth=auth,
        limits=cfg.limits,
        telemetry=Telemetry(cfg.telemetry),
        metrics=default_metrics(),
    )


def running_replicas(app: str) -> dict[str, int]:
    """RUNNING replicas per deployment of `app`.

    `serve.status()` re-validates the controller's whole answer into pydantic models, and on the way
    cloudpickles every deployment's request-router class: ~9% of the ingress replica's CPU under load
    when polled every second (py-spy, benchmarks/overhead.py --profile). The controller's raw dict has
    the same replica states for none of that cost; `serve.status()` stays the fallback.
    """
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is None:
            raise LookupError("no Serve controller client")
        details = client.get_serve_details()
        deployments = details["applications"][app]["deployments"]
        return {name: sum(1 for r in d.get("replicas", ()) if r.get("state") == "RUNNING")  # str enum or str
                for name, d in deployments.items()}
    except (ImportError, AttributeError, KeyError, TypeError, LookupError):
        status = serve.status().applications[app].deployments
        return {name: d.replica_states.get("RUNNING", 0) for name, d in status.items()}  # type: ignore[call-overload]


def per_ingress(targets: Sequence[Target], ingress_replicas: int) -> list[Target]:
    """Each ingress replica sees only its own in-flight requests, so its latency model gets its share of
    every target's slots (else with N ingress replicas each would think the targets N times emptier)."""
    if ingress_replicas <= 1:
        return list(targets)
    return [t.model_copy(update={"latency": t.latency.model_copy(update={
        "max_concurrency": max(1, math.ceil(t.latency.max_concurrency / ingress_replicas))})}) for t in targets]


@serve.deployment(name="router")
@serve.ingress()
class RouterIngress:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:
        self.cfg = AppConfig.model_validate(config)
        self.service = build_service(self.cfg, {tid: HandleClient(h) for tid, h in handles.items()})
        self._providers = {p.id: handles[p.id] for p in self.cfg.providers}
        self._models = {f"model-{m.id}": m.id for m in self.cfg.models}
        self._tasks: list[asyncio.Task[None]] = []

    async def __serve_build_asgi_app__(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._providers:
            self._tasks.append(loop.create_task(self._poll_health()))
        if self._models:
            self._tasks.append(loop.create_task(self._poll_replicas()))
        if isinstance(self.service.metrics, BufferedMetrics):
            self._tasks.append(loop.create_task(self._flush_metrics(self.service.metrics)))
        return make_app(lambda: self.service)

    def __del__(self) -> None:  # Serve calls this on graceful shutdown: the last second of metrics
        metrics = getattr(getattr(self, "service", None), "metrics", None)
        if isinstance(metrics, BufferedMetrics):
            try:
                metrics.flush()
            except Exception:
                pass

    async def stats(self) -> dict[str, int]:
        """For operators and the soak test (a handle call, no HTTP route): asyncio tasks alive in the
        replica's request event loop (a leak shows as growth between idle moments)."""
        return {"asyncio_tasks": len(asyncio.all_tasks())}

    async def _flush_metrics(self, metrics: BufferedMetrics) -> None:
        # Recording a Ray metric costs more than a routing decision; the request path only appends to
        # buffers, and this task hands them to Ray's exporter in one go.
        while True:
            await asyncio.sleep(self.cfg.ingress.metrics_flush_s)
            try:
                metrics.flush()
            except Exception:  # a metrics failure must never take the router down
                log.warning("metrics flush failed", exc_info=True)

    async def _poll_replicas(self) -> None:
        # A model whose replicas all died queues requests until Serve restarts one (about a minute for
        # a vLLM engine). Marking it down lets the policy pick another target meanwhile.
        app = serve.get_replica_context().app_name
        set_replicas = getattr(self.service.view.latency, "set_replicas", None)
        while True:
            try:
                running = await asyncio.to_thread(running_replicas, app)  # a blocking controller call
                for name, tid in self._models.items():
                    n = running.get(name, 0)
                    self.service.view.set_health(tid, None if n else False)
                    if n and set_replicas is not None:  # autoscaling, or replicas lost with a node
                        set_replicas(tid, n)
            except Exception:  # status unavailable (controller restarting): keep the last known state
                log.debug("replica status poll failed", exc_info=True)
            await asyncio.sleep(self.cfg.ingress.replica_poll_s)

    async def _poll_health(self) -> None:
        # Provider breakers live in the provider replicas; a cheap poll keeps the policy from choosing
        # a provider whose breaker is open, without a handle call on the request path.
        while True:
            for tid, handle in self._providers.items():
                try:
                    health = await handle.health.remote()
                    self.service.view.set_health(tid, bool(health.get("healthy", True)))
                except Exception:  # a dead provider replica: Serve restarts it; count as unhealthy
                    self.service.view.set_health(tid, False)
            await asyncio.sleep(self.cfg.ingress.health_poll_s)
