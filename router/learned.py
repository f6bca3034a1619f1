"""Learned quality predictors in the ingress: loaded at replica start, run off the event loop.

- `load_quality(cfg, targets)`: builds the configured predictor and, for a learned one, loads its
  featurizer and runs one prediction, inside the replica's constructor. Serve marks a replica ready
  only after the constructor returns, so readiness waits for the model; a predictor that cannot load
  (missing artifact, featurizer not built, dimensions that do not match) fails the start with a
  `PredictorLoadError` naming the artifact and what to do, never the first request.
  Where a prompt's prediction is computed is `quality.offload` (`auto`: on the event loop for short
  prompts and a linear predictor on the static featurizer, where the hand-off to a thread costs more
  than the work; the worker thread otherwise; `worker`, `batched`, `inline` to choose by hand), and
  `quality.switch_interval_ms` sets the process's thread switch interval.
- `PreparingService`: the RouterService whose `chat`/`chat_stream` first await the predictor's
  `prepare(prompt)` (policies/predictors/offload.py: a bounded worker pool) and then run the
  synchronous plan, whose decision reads the prepared prediction. Requests that are not `auto`, or
  whose body or key is bad, skip the preparation; the plan reports their error as before.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from policies.base import QualityPredictor
from policies.config import build_quality
from policies.predictors.offload import OffloadedQuality, single_thread_blas
from policies.types import Target
from router.parse import Endpoint, parse_body, prompt_and_tokens
from router.service import RouterService


class PredictorLoadError(RuntimeError):
    """The configured quality predictor cannot serve; raised at replica start."""


def load_quality(cfg: Any, targets: Sequence[Target], embedder: Any = None) -> QualityPredictor:
    """The configured predictor, loaded and checked; learned ones wrapped to run off the event loop."""
    kind = getattr(cfg, "kind", "?")
    artifact = getattr(cfg, "artifact", None)
    what = f"quality predictor '{kind}'" + (f" (artifact {artifact})" if artifact else "")
    try:
        inner = build_quality(cfg, targets, embedder=embedder)
        if artifact is None:  # table-driven: nothing to load, nothing slow to offload
            return inner
        offload = getattr(cfg, "offload", "worker")
        interval = getattr(cfg, "switch_interval_ms", None)
        if interval is not None:
            sys.setswitchinterval(interval / 1000.0)
        if offload == "inline":
            single_thread_blas()
            inner.predict("warm-up: is the predictor loaded?", targets)
            return inner
        quality = OffloadedQuality(inner, targets, batch=offload == "batched",
                                   inline_max_chars=_inline_chars(cfg, inner) if offload == "auto" else 0)
        quality.warm()
    except Exception as e:
        raise PredictorLoadError(f"{what} failed to load: {type(e).__name__}: {e}") from e
    return quality


# Predictors whose scoring is a few small matrix products: on the static featurizer a prediction costs
# about what featurizing costs (~0.03-0.15 ms by prompt length, BENCHMARKS.md P2), less than handing it
# to the worker thread. A kNN scans its whole index per prompt; MiniLM is a forward pass: worker.
_LINEAR = ("logistic", "mf", "irt")


def _inline_chars(cfg: Any, inner: Any) -> int:
    from policies.predictors.static_embed import StaticEmbedder

    fast = getattr(inner, "kind", None) in _LINEAR and isinstance(getattr(inner, "embedder", None), StaticEmbedder)
    return int(getattr(cfg, "inline_max_chars", 0)) if fast else 0


class PreparingService(RouterService):
    """RouterService that featurizes and scores an `auto` request's prompt off the loop first."""

    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat"
    ) -> tuple[dict[str, Any], dict[str, str]]:
        await self.prepare(body, headers, endpoint)
        return await super().chat(body, headers, endpoint)

    async def chat_stream(self, body: dict[str, Any], headers: Mapping[str, str], endpoint: Endpoint = "chat") -> Any:
        await self.prepare(body, headers, endpoint)
        return await super().chat_stream(body, headers, endpoint)

    async def prepare(self, body: Any, headers: Mapping[str, str], endpoint: Endpoint) -> None:
        prepare = getattr(self.view.quality, "prepare", None)
        if prepare is None or not isinstance(body, dict) or body.get("model") != "auto":
            return
        try:
            # Authenticated callers only: an anonymous flood must not buy featurizer time.
            self.auth.authenticate(headers.get("authorization"))
            prompt, _ = prompt_and_tokens(parse_body(body, endpoint))
        except Exception:
            return  # the plan raises the same error with its bookkeeping
        await prepare(prompt)
