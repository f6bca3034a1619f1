"""The Serve ingress deployment: builds the RouterService in the replica and serves router.api's app.

The request path is proxy -> this replica -> one handle call to the chosen target: one hop, no more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ray import serve

from deployments.handle_client import HandleClient
from policies.config import build_latency, build_policy, build_quality
from router.api import make_app
from router.auth import KeyStore
from router.config import AppConfig
from router.metrics import default_metrics
from router.service import RouterService
from router.telemetry import Telemetry
from router.view import LiveView

log = logging.getLogger("router")


def build_service(cfg: AppConfig, clients: Mapping[str, Any]) -> RouterService:
    """Wire config, clients, policy and live view together (also used by tests without Serve)."""
    targets = cfg.targets()
    view = LiveView(targets, build_latency(cfg.latency, targets), build_quality(cfg.quality, targets))
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
        return make_app(lambda: self.service)

    async def _poll_replicas(self) -> None:
        # A model whose replicas all died queues requests until Serve restarts one (about a minute for
        # a vLLM engine). Marking it down lets the policy pick another target meanwhile.
        app = serve.get_replica_context().app_name
        while True:
            try:
                status = await asyncio.to_thread(serve.status)  # a blocking controller call: off the loop
                deployments = status.applications[app].deployments
                for name, tid in self._models.items():
                    d = deployments.get(name)
                    running = d.replica_states.get("RUNNING", 0) if d is not None else 0
                    self.service.view.set_health(tid, None if running else False)
            except Exception:  # status unavailable (controller restarting): keep the last known state
                log.debug("replica status poll failed", exc_info=True)
            await asyncio.sleep(self.cfg.ingress.health_poll_s)

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
