"""OffloadedQuality in batched mode: prompts that arrive while a worker call runs share the next call,
every waiter gets its own prediction, and a batch scores exactly what single prompts score."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policies.predictors import KNNPredictor, LogisticPredictor
from policies.predictors.offload import OffloadedQuality
from policies.predictors.static_embed import StaticEmbedder
from policies.types import Target
from tests.unit.policies.helpers import TARGETS
from tests.unit.policies.test_featurizer import tiny_static


class Recording:
    """Scores a prompt by its length; records the batches it was called with (and on which thread)."""

    targets = ("small", "mid", "gpt")

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        return self.predict_batch([prompt], targets)[0]

    def predict_batch(self, prompts: Sequence[str], targets: Sequence[Target]) -> list[dict[str, float]]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(prompts))
        time.sleep(self.delay_s)
        return [{t.id: len(p) / 100 for t in targets} for p in prompts]


async def test_concurrent_prompts_share_one_worker_call() -> None:
    inner = Recording()
    quality = OffloadedQuality(inner, TARGETS, batch=True)
    prompts = [f"prompt number {'x' * i}" for i in range(7)]
    await asyncio.gather(*(quality.prepare(p) for p in prompts[:3]))  # in one loop turn: one call
    assert [len(b) for b in inner.batches] == [3]
    first = asyncio.create_task(quality.prepare(prompts[3]))
    await asyncio.sleep(0.01)  # its call is running; the next three arrive meanwhile and share one call
    await asyncio.gather(first, *(quality.prepare(p) for p in prompts[4:]))
    assert [len(b) for b in inner.batches] == [3, 1, 3]
    assert quality.worker_calls == 3 and quality.offloaded_calls == 7
    assert threading.get_ident() not in inner.threads
    for p in prompts:
        assert quality.predict(p, TARGETS) == {t.id: len(p) / 100 for t in TARGETS}
    assert quality.inline_calls == 0


async def test_the_same_prompt_twice_is_scored_once() -> None:
    inner = Recording()
    quality = OffloadedQuality(inner, TARGETS, batch=True)
    await asyncio.gather(quality.prepare("first"), quality.prepare("again"), quality.prepare("again"))
    assert sorted(p for b in inner.batches for p in b) == ["again", "first"]


async def test_a_cancelled_request_does_not_cancel_the_others() -> None:
    inner = Recording(delay_s=0.1)
    quality = OffloadedQuality(inner, TARGETS, batch=True)
    first = asyncio.create_task(quality.prepare("keeps the worker busy"))
    await asyncio.sleep(0.01)
    a = asyncio.create_task(quality.prepare("shared"))
    b = asyncio.create_task(quality.prepare("shared"))
    await asyncio.sleep(0.01)
    a.cancel()
    await asyncio.gather(first, b)
    assert quality.predict("shared", TARGETS)["small"] == len("shared") / 100
    assert quality.inline_calls == 0


async def test_a_failing_batch_leaves_each_decision_to_meet_the_error() -> None:
    class Broken(Recording):
        def predict_batch(self, prompts, targets):  # type: ignore[no-untyped-def]
            raise ValueError("predictor broke")

    quality = OffloadedQuality(Broken(), TARGETS, batch=True)
    await asyncio.gather(quality.prepare("one"), quality.prepare("two"))  # logged, nothing memoised
    assert quality.offloaded_calls == 0
    assert not quality._waiting and not quality._queue


def test_a_batch_scores_what_single_prompts_score(tmp_path: Path) -> None:
    feat = StaticEmbedder(tiny_static(tmp_path / "feat"))
    train = ["add two numbers", "write a poem about rain", "what is the capital of Peru", "sort a list",
             "prove the theorem", "a short story", "compute the integral", "bake some bread"]
    E = feat.embed(train)
    rng = np.random.default_rng(0)
    labels = {t.id: (rng.random(len(train)) < 0.5).astype(float) for t in TARGETS}
    new = ["a poem about numbers", "sort the capital", "integral of bread", "rain"]
    for pred in (KNNPredictor(k=3).fit(E, labels), LogisticPredictor(steps=30).fit(E, labels)):
        pred._embedder = feat
        batch = pred.predict_batch(new, TARGETS)
        for prompt, row in zip(new, batch, strict=True):
            single = pred.predict(prompt, TARGETS)
            assert row.keys() == single.keys()
            assert np.allclose([row[t] for t in row], [single[t] for t in row], rtol=0, atol=1e-6)
