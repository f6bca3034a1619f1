"""Quality predictions off the event loop: `OffloadedQuality` wraps any QualityPredictor.

Policies are synchronous (`decide` must not await), and a learned predictor's work (featurizing the
prompt, scoring it) can take from 0.1 ms (static featurizer) to 65 ms (MiniLM). Run on the ingress's
event loop, that time stalls every other request and stream of the replica. So the ingress first
awaits `prepare(prompt)`, which computes the prediction for every target in a worker thread (a
bounded pool with a bounded queue: at most `max_pending` prompts wait, further requests wait for a
slot without blocking the loop) and keeps it in a small memo keyed by a hash of the prompt; the
decision that follows reads the memo (microseconds). A `predict` without a `prepare` (tests, offline
replay, a caller that skipped it) computes inline, as before, and is counted in `inline_calls`.

The worker releases the GIL in the heavy parts (torch, numpy, the Rust tokenizer), and Python's
thread switch interval (5 ms) bounds how long the worker's pure-Python parts hold the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from policies.predictors.embed import prompt_key
from policies.types import Target

log = logging.getLogger(__name__)


def single_thread_blas() -> None:
    """One BLAS thread in this process. A kNN over 5,000 prompts took 12 ms with OpenBLAS's threads
    fighting the other processes of a busy 2-core machine and 0.26 ms on one thread (load average 10);
    the ingress reserves a tenth of a core and has no business fanning out."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return
    threadpool_limits(limits=1, user_api="blas")


class OffloadedQuality:
    """QualityPredictor whose per-prompt work runs in a worker thread, awaited before the decision."""

    def __init__(
        self,
        inner: Any,
        targets: Sequence[Target],
        workers: int = 1,
        max_pending: int = 64,
        memo_size: int = 1024,
        batch: bool = False,
        inline_max_chars: int = 0,
    ) -> None:
        self.inner = inner
        self.all_targets = tuple(targets)
        self.max_pending = max_pending
        self.memo_size = memo_size
        self.batch = batch
        self.inline_max_chars = inline_max_chars
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quality")
        self._memo: OrderedDict[bytes, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None
        self._queue: list[tuple[bytes, str]] = []  # batch mode: prompts waiting for the next worker call
        self._waiting: dict[bytes, asyncio.Future[None]] = {}
        self._draining = False
        self.inline_calls = 0
        self.offloaded_calls = 0
        self.worker_calls = 0
        self.prepared_inline = 0

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(getattr(self.inner, "targets", ()))

    def warm(self) -> dict[str, float]:
        """Load everything the predictor needs and run it once (the replica's start-up check)."""
        single_thread_blas()
        embedder = getattr(self.inner, "embedder", None)
        load = getattr(embedder, "load", None)
        if load is not None:
            load()
        return dict(self.inner.predict("warm-up: is the predictor loaded?", self.all_targets))

    def _compute(self, key: bytes, prompt: str) -> None:
        self._compute_many([(key, prompt)])

    def _compute_many(self, items: Sequence[tuple[bytes, str]]) -> None:
        """Score the prompts in one call where the predictor can (`predict_batch`), and memoise them."""
        prompts = [p for _, p in items]
        batch = getattr(self.inner, "predict_batch", None)
        if batch is not None and len(prompts) > 1:
            rows = batch(prompts, self.all_targets)
        else:
            rows = [self.inner.predict(p, self.all_targets) for p in prompts]
        with self._lock:
            for (key, _), scores in zip(items, rows, strict=True):
                self._memo[key] = dict(scores)
                self._memo.move_to_end(key)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)

    def _lookup(self, key: bytes) -> dict[str, float] | None:
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
            return hit

    async def prepare(self, prompt: str) -> None:
        """Compute this prompt's predictions in the worker unless they are memoised."""
        key = prompt_key(prompt)
        if self._lookup(key) is not None:
            return
        if len(prompt) <= self.inline_max_chars:  # cheaper here than the hand-off to the worker
            self._compute(key, prompt)
            self.prepared_inline += 1
            return
        if self._slots is None:  # created on the loop that uses it
            self._slots = asyncio.Semaphore(self.max_pending)
        async with self._slots:
            if self._lookup(key) is not None:  # a concurrent request with the same prompt did it
                return
            if self.batch:
                await self._batched(key, prompt)
                return
            try:
                self.worker_calls += 1
                await asyncio.get_running_loop().run_in_executor(self._pool, self._compute, key, prompt)
            except Exception:  # the decision's own predict call meets the error and reports it as before
                log.warning("quality prediction failed in the worker", exc_info=True)
                return
            self.offloaded_calls += 1

    async def _batched(self, key: bytes, prompt: str) -> None:
        """Join the next worker call: the prompts that arrive while one call runs go together in the
        next, so concurrent requests cost one hand-off to the worker (and one wake-up of the loop)."""
        fut = self._waiting.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._waiting[key] = loop.create_future()
            self._queue.append((key, prompt))
            if not self._draining:
                self._draining = True
                loop.create_task(self._drain())
        await asyncio.shield(fut)  # a cancelled request must not cancel the others' shared call

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                items, self._queue = self._queue, []
                try:
                    self.worker_calls += 1
                    await loop.run_in_executor(self._pool, self._compute_many, items)
                    self.offloaded_calls += len(items)
                except Exception:  # each decision's own predict call meets the error, as before
                    log.warning("quality prediction failed in the worker", exc_info=True)
                finally:
                    for k, _ in items:
                        f = self._waiting.pop(k, None)
                        if f is not None and not f.done():
                            f.set_result(None)
        finally:
            self._draining = False

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        hit = self._lookup(prompt_key(prompt))
        if hit is None:
            self.inline_calls += 1
            return dict(self.inner.predict(prompt, targets))
        return {t.id: hit.get(t.id, t.quality_prior) for t in targets}

    def predict_embeddings(self, E: Any) -> Any:  # the offline path, unchanged
        return self.inner.predict_embeddings(E)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
