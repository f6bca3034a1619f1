"""The Serve ingress deployment: builds the RouterService in the replica and serves router.api's app.

The request path is proxy -> this replica -> one handle call to the chosen local model, or, for an
API provider, the HTTP call itself from this replica (`ProviderClient`, one per provider per replica,
each with its own breaker; no Serve hop in front of it, BENCHMARKS.md "API fallback").
A local model is a deployment `model-<id>` either in this application or in an application of its own
(`app:` in its entry; then a router-only config change never restarts its engine); the replica poll
reads both the same way and tells the live view which models are up, cold (scaled to zero) or warming.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray import serve

from deployments.handle_client import HandleClient
from deployments.provider import ProviderClient
from policies.config import build_latency, build_policy
from policies.types import Target
from router.api import make_app
from router.auth import KeyStore
from router.budget import budget_for
from router.cold import ColdAware
from router.config import AppConfig
from router.learned import PreparingService, load_quality
from router.metrics import BufferedMetrics, default_metrics
from router.service import RouterService
from router.telemetry import Telemetry
from router.view import LiveView

log = logging.getLogger("router")
# Lifecycle lines users wait for go to Serve's replica log (INFO, shown by `serve run`); our own logger
# has no handler in a replica, so its INFO records would be dropped.
serve_log = logging.getLogger("ray.serve")


def build_service(cfg: AppConfig, clients: Mapping[str, Any]) -> RouterService:
    """Wire config, clients, policy and live view together (also used by tests without Serve)."""
    targets = cfg.targets()
    cold = {m.id: m.cold_start_s for m in cfg.models if m.scales_from_zero}
    view = LiveView(targets, build_latency(cfg.latency, per_ingress(targets, cfg.ingress.num_replicas)),
                    load_quality(cfg.quality, targets), cold_start_s=cold)
    policy = build_policy(cfg.policy)
    auth = KeyStore.from_config(cfg.auth)
    if auth.open:
        log.warning("router: no API keys configured: the endpoint is open to anyone who can reach it")
    return PreparingService(  # learned predictors: featurized off the event loop (router/learned.py)
        targets,
        clients,
        ColdAware(policy, list(cold)) if cold else policy,
        view,
        auth=auth,
        limits=cfg.limits,
        telemetry=Telemetry(cfg.telemetry),
        metrics=default_metrics(),
    )


def _healthy_check(client: ProviderClient) -> Callable[[], bool]:
    return lambda: client.healthy


ModelState = tuple[int, int | None]  # (RUNNING replicas, target replicas or None if unknown)


def replica_states(wanted: Mapping[str, tuple[str, str]]) -> dict[str, ModelState]:
    """(RUNNING replicas, target replicas) per model id, for {model id: (application, deployment)}.
    A model whose application or deployment does not exist (yet) is left out.

    `serve.status()` re-validates the controller's whole answer into pydantic models, and on the way
    cloudpickles every deployment's request-router class: ~9% of the ingress replica's CPU under load
    when polled every second (py-spy, benchmarks/overhead.py --profile). The controller's raw dict has
    the same replica states for none of that cost; `serve.status()` stays the fallback.
    """
    out: dict[str, ModelState] = {}
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is None:
            raise LookupError("no Serve controller client")
        apps = client.get_serve_details()["applications"]
        for tid, (app, name) in wanted.items():
            d = (apps.get(app) or {}).get("deployments", {}).get(name)
            if d is not None:
                running = sum(1 for r in d.get("replicas", ()) if r.get("state") == "RUNNING")  # str enum
                out[tid] = (running, d.get("target_num_replicas"))
    except (ImportError, AttributeError, KeyError, TypeError, LookupError):
        status = serve.status().applications
        for tid, (app, name) in wanted.items():
            dep = status[app].deployments.get(name) if app in status else None
            if dep is not None:
                out[tid] = (dep.replica_states.get("RUNNING", 0), None)  # type: ignore[call-overload]
    return out


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
    def __init__(self, config: dict[str, Any], handles: dict[str, Any], ledger: Any = None) -> None:
        self.cfg = AppConfig.model_validate(config)
        handles = dict(handles)
        for m in self.cfg.models:
            if m.app is not None:
                # Its own application, built concurrently with this one by `serve run` (a vLLM engine's
                # builder imports vLLM first, so its deployment may not exist yet): a handle by name,
                # without Serve's existence check; the replica poll marks the model down until it runs.
                handles[m.id] = serve.get_deployment_handle(f"model-{m.id}", app_name=m.app, _check_exists=False)
        # Providers are called from this replica. A provider with a handle in `handles` is called through
        # that deployment instead (only benchmarks/provider_hop.py binds one, to measure the hop).
        self._providers = {p.id: ProviderClient.from_env(p) for p in self.cfg.providers if p.id not in handles}
        clients: dict[str, Any] = {tid: HandleClient(h) for tid, h in handles.items()}
        self.service = build_service(self.cfg, {**clients, **self._providers})
        for tid, client in self._providers.items():  # a read of this replica's breaker: no I/O, no poll
            self.service.view.add_health_check(tid, _healthy_check(client))
        self.service.set_budget(budget_for(self.cfg.auth.ledger, ledger))  # shared by all replicas
        own = serve.get_replica_context().app_name
        # model id -> (application, deployment): router.app binds inline ones as "model-<id>" here
        self._models = {m.id: (m.app or own, f"model-{m.id}") for m in self.cfg.models}
        self._scale_from_zero = {m.id for m in self.cfg.models if m.scales_from_zero}
        self._handles = {m.id: handles[m.id] for m in self.cfg.models}
        self._wakes: set[asyncio.Task[None]] = set()
        self.service.view.set_waker(self._wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_up: set[str] = set()  # models that had a running replica: down is then "down", not "starting"

    async def __serve_build_asgi_app__(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._providers:
            self._tasks.append(loop.create_task(self._poll_health()))
        if self._models:
            # One poll before this replica takes traffic, so a new replica (a reload) starts with the
            # real model states, not "all healthy".
            try:
                await asyncio.wait_for(self._poll_once(), timeout=10)
            except Exception:
                log.warning("first replica poll failed; models count as healthy until the next one")
            self._tasks.append(loop.create_task(self._poll_replicas()))
        if isinstance(self.service.metrics, BufferedMetrics):
            self._tasks.append(loop.create_task(self._flush_metrics(self.service.metrics)))
        self._tasks.append(loop.create_task(self.service.budget.run(self.cfg.auth.ledger.flush_s)))
        return make_app(lambda: self.service)

    async def __del__(self) -> None:  # Serve awaits this on graceful shutdown: the last metrics and spend
        service = getattr(self, "service", None)
        metrics = getattr(service, "metrics", None)
        if isinstance(metrics, BufferedMetrics):
            try:
                metrics.flush()
            except Exception:
                pass
        if service is not None:
            try:  # book the last spend and hand unused leases back to the ledger
                await asyncio.wait_for(service.budget.flush(final=True), 5)
            except Exception:
                log.warning("final budget report failed", exc_info=True)
            try:  # export the spans still buffered in the batch processor
                service.telemetry.shutdown()
            except Exception:
                log.warning("telemetry shutdown failed", exc_info=True)
        for client in getattr(self, "_providers", {}).values():
            try:
                await client.aclose()
            except Exception:
                pass

    async def stats(self) -> dict[str, Any]:
        """For operators and the soak test (a handle call, no HTTP route): asyncio tasks alive in the
        replica's request event loop (a leak shows as growth between idle moments), model states and the
        cold-start estimates of models that scale from zero."""
        view = self.service.view
        return {"asyncio_tasks": len(asyncio.all_tasks()), "pid": os.getpid(),
                "states": {tid: view.state(tid) for tid in self._models},
                "cold_start": {tid: view.cold_start(tid) for tid in self._scale_from_zero},
                "in_flight": {t.id: getattr(view.latency, "in_flight", lambda _: None)(t.id)
                              for t in self.service.targets},
                "open_requests": self.service.open_requests}

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
        while True:
            await asyncio.sleep(self.cfg.ingress.replica_poll_s)
            try:
                await self._poll_once()
            except Exception:  # status unavailable (controller restarting): keep the last known state
                log.debug("replica status poll failed", exc_info=True)

    async def _poll_once(self) -> None:
        states = await asyncio.to_thread(replica_states, self._models)  # a blocking controller call
        view = self.service.view
        set_replicas = getattr(view.latency, "set_replicas", None)
        for tid in self._models:
            running, target = states.get(tid, (0, None))
            if running:
                if tid not in self._seen_up:
                    self._seen_up.add(tid)
                    view.set_starting(tid, False)
                    serve_log.info("router: model '%s' is up (%d replica%s)", tid, running, "s"[: running > 1])
                view.set_health(tid, None)
                view.set_scale_state(tid, None)
                if set_replicas is not None:  # autoscaling, or replicas lost with a node
                    set_replicas(tid, running)
            elif tid in self._scale_from_zero and tid in states:
                # Scaled to zero is not down: the model can be woken (router/cold.py).
                view.set_health(tid, None)
                view.set_scale_state(tid, "cold" if target == 0 or target is None else "warming")
            else:
                view.set_scale_state(tid, None)
                view.set_starting(tid, tid not in self._seen_up)
                view.set_health(tid, False)

    def _wake(self, tid: str) -> None:
        """The view's waker: one call to the cold model, off the request path (router/cold.py)."""
        task = asyncio.get_running_loop().create_task(self._wake_call(tid))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _wake_call(self, tid: str) -> None:
        ok = False
        try:
            # Queued at the handle while no replica runs: Serve's autoscaler counts it and starts one.
            await asyncio.wait_for(self._handles[tid].wake.remote(), timeout=self.cfg.ingress.wake_timeout_s)
            ok = True
            log.info("model '%s' woke up", tid)
        except Exception as e:  # the poll still sees the replica once it runs
            log.warning("wake-up call to '%s' failed: %s", tid, type(e).__name__)
        finally:
            self.service.view.woke(tid, ok)

    async def _poll_health(self) -> None:
        # The breakers live in this replica and the view reads them directly. This loop only probes each
        # provider (ProviderClient.probe): on a connection pool of its own, so a saturated request pool
        # does not delay it, and bounded by the provider's timeouts.health_s.
        clients = list(self._providers.values())
        while True:
            results = await asyncio.gather(*(c.probe() for c in clients), return_exceptions=True)
            for c, r in zip(clients, results, strict=True):
                if isinstance(r, BaseException):
                    log.warning("health probe of %s failed: %s", c.config.id, type(r).__name__)
            await asyncio.sleep(self.cfg.ingress.health_poll_s)
