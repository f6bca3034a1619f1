"""Where the ingress computes a learned prediction (`quality.offload`) and the switch interval option."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from policies.config import parse_quality
from policies.predictors import KNNPredictor, LogisticPredictor
from policies.predictors.featurizers import record
from policies.predictors.offload import OffloadedQuality
from policies.predictors.static_embed import StaticEmbedder
from router.learned import load_quality
from tests.unit.policies.test_featurizer import tiny_static
from tests.unit.router.fakes import targets

PROMPTS = ["add two numbers", "write a poem about rain", "what is the capital of Peru", "sort a list"]


def _artifact(tmp_path: Path, kind: str) -> Path:
    feat = StaticEmbedder(tiny_static(tmp_path / "feat"))
    labels = {t: np.array([1.0, float(j % 2), 1.0, 0.0]) for j, t in enumerate(("small", "big", "api"))}
    pred = KNNPredictor(k=2) if kind == "knn" else LogisticPredictor(steps=20)
    art = pred.fit(feat.embed(PROMPTS), labels).save(tmp_path / kind)
    record(art, "static", feat)
    return art


def _load(art: Path, kind: str, **kw):  # type: ignore[no-untyped-def]
    return load_quality(parse_quality({"kind": kind, "artifact": str(art), **kw}), targets())


async def test_auto_computes_a_short_prompt_for_a_linear_predictor_on_the_loop(tmp_path: Path) -> None:
    q = _load(_artifact(tmp_path, "logistic"), "logistic")  # offload: auto is the default
    assert isinstance(q, OffloadedQuality) and q.inline_max_chars == 1000
    await q.prepare("a short prompt")
    await q.prepare("a long prompt " + "word " * 300)
    assert (q.prepared_inline, q.offloaded_calls, q.worker_calls) == (1, 1, 1)
    ts = targets()
    for p in ("a short prompt", "a long prompt " + "word " * 300):  # both memoised, same as inline
        assert q.predict(p, ts) == q.inner.predict(p, ts)
    assert q.inline_calls == 0


async def test_auto_keeps_a_knn_in_the_worker(tmp_path: Path) -> None:
    q = _load(_artifact(tmp_path, "knn"), "knn")
    assert isinstance(q, OffloadedQuality) and q.inline_max_chars == 0
    seen: list[int] = []
    inner_predict = q.inner.predict

    def recording(prompt, ts):  # type: ignore[no-untyped-def]
        seen.append(threading.get_ident())
        return inner_predict(prompt, ts)

    q.inner.predict = recording
    await q.prepare("a short prompt")
    assert seen and threading.get_ident() not in seen and q.prepared_inline == 0


def test_inline_serves_the_predictor_unwrapped_and_loaded(tmp_path: Path) -> None:
    q = _load(_artifact(tmp_path, "logistic"), "logistic", offload="inline")
    assert isinstance(q, LogisticPredictor) and q.embedder.loaded


def test_batched_and_worker_modes(tmp_path: Path) -> None:
    art = _artifact(tmp_path, "logistic")
    batched, worker = _load(art, "logistic", offload="batched"), _load(art, "logistic", offload="worker")
    assert (batched.batch, batched.inline_max_chars) == (True, 0)
    assert (worker.batch, worker.inline_max_chars) == (False, 0)


def test_switch_interval_is_set_for_the_process(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    try:
        _load(_artifact(tmp_path, "knn"), "knn", switch_interval_ms=0.5)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_unknown_offload_mode_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="offload"):
        parse_quality({"kind": "knn", "artifact": "x", "offload": "gpu"})


async def test_batched_mode_in_the_real_loop(tmp_path: Path) -> None:
    q = _load(_artifact(tmp_path, "knn"), "knn", offload="batched")
    await asyncio.gather(*(q.prepare(p + " again") for p in PROMPTS))
    assert q.worker_calls == 1 and q.offloaded_calls == 4
    ts = targets()
    for p in PROMPTS:
        got, want = q.predict(p + " again", ts), q.inner.predict(p + " again", ts)
        assert got.keys() == want.keys() and np.allclose(list(got.values()), list(want.values()), atol=1e-6)
