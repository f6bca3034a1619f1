"""Shared parts of the trainable predictors: label matrices, artifacts, masked training, scoring."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from policies.types import Target

FORMAT = 1
META = "meta.json"
WEIGHTS = "weights.npz"

P = TypeVar("P", bound="EmbeddingPredictor")


def label_matrix(
    labels: Mapping[str, Sequence[float] | np.ndarray], n: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """{target: (n,) labels in [0, 1], NaN = unknown} -> (target ids, (n, T) float matrix)."""
    ids = tuple(labels)
    if not ids:
        raise ValueError("labels must name at least one target")
    Y = np.empty((n, len(ids)), dtype=np.float64)
    for j, t in enumerate(ids):
        col = np.asarray(labels[t], dtype=np.float64)
        if col.shape != (n,):
            raise ValueError(f"labels[{t!r}] has shape {col.shape}, expected ({n},)")
        if np.any((col < 0) | (col > 1)):
            raise ValueError(f"labels[{t!r}] must lie in [0, 1] (NaN = unknown)")
        Y[:, j] = col
    return ids, Y


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def adam(
    params: dict[str, np.ndarray],
    grad: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    steps: int,
    lr: float,
) -> None:
    """Full-batch Adam, in place. Full batch keeps training deterministic without a data loader."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        g = grad(params)
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            mh = m[k] / (1 - b1**step)
            vh = v[k] / (1 - b2**step)
            params[k] -= lr * mh / (np.sqrt(vh) + eps)


def masked_bce_grad(P_: np.ndarray, Y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """d(mean masked BCE)/d logits, with NaN labels contributing nothing."""
    return np.where(mask, P_ - np.nan_to_num(Y), 0.0) / max(int(mask.sum()), 1)


class EmbeddingPredictor:
    """Base of predictors that score a prompt's embedding.

    Subclasses implement `_fit(E, Y)`, `predict_embeddings(E)` and the artifact's arrays/params.
    """

    kind: ClassVar[str] = ""

    def __init__(self, embedder: Any = None) -> None:
        self.targets: tuple[str, ...] = ()
        self._embedder = embedder

    # -- training ------------------------------------------------------------------------------------
    def fit(self: P, X: np.ndarray | Sequence[str], labels: Mapping[str, Sequence[float] | np.ndarray]) -> P:
        """Train on embeddings (n, d) or on prompts (embedded here), labels {target: (n,) in [0, 1]}."""
        E = self._as_embeddings(X)
        self.targets, Y = label_matrix(labels, E.shape[0])
        self._fit(E, Y)
        return self

    def _as_embeddings(self, X: np.ndarray | Sequence[str]) -> np.ndarray:
        if isinstance(X, np.ndarray):
            if X.ndim != 2:
                raise ValueError("embeddings must be a 2-d array (n, dim)")
            return X.astype(np.float32, copy=False)
        return self.embedder.embed(list(X))

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from policies.predictors.embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def predict_embeddings(self, E: np.ndarray) -> dict[str, np.ndarray]:
        """{target: (n,) P(acceptable)} for precomputed embeddings E (n, dim): the bulk/offline path."""
        raise NotImplementedError

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        """QualityPredictor: embed (LRU-cached) and score; unknown targets get their prior."""
        e = self.embedder.embed_one(prompt)
        scores = self.predict_embeddings(e[None, :])
        return {t.id: float(scores[t.id][0]) if t.id in scores else t.quality_prior for t in targets}

    # -- artifacts -----------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {}

    def _restore(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory: weights.npz (arrays) + meta.json (kind, targets, params)."""
        if not self.targets:
            raise ValueError("fit the predictor before saving it")
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / WEIGHTS, **self._arrays())  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        meta = {"format": FORMAT, "kind": self.kind, "targets": list(self.targets), "params": self._params()}
        (d / META).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls: type[P], path: str | Path, embedder: Any = None) -> P:
        """Read an artifact written by `save` (no pickle: arrays via np.load(allow_pickle=False))."""
        d = Path(path)
        meta = read_meta(d)
        if meta["kind"] != cls.kind:
            raise ValueError(f"{d} holds a {meta['kind']!r} predictor, not {cls.kind!r}")
        obj = cls.__new__(cls)
        EmbeddingPredictor.__init__(obj, embedder)
        obj.targets = tuple(meta["targets"])
        with np.load(d / WEIGHTS, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        obj._restore(arrays, meta.get("params", {}))
        return obj


def read_meta(d: Path) -> dict[str, Any]:
    meta = json.loads((Path(d) / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: unsupported artifact format {meta.get('format')!r}")
    return meta
