"""k-nearest-neighbour quality: the labels of the k most similar training prompts (cosine similarity).

P(acceptable | prompt, t) = (sum_i w_i y_it + a * mean_t) / (sum_i w_i + a) over the k neighbours that
have a label for t, w_i = max(similarity, 0); the `a` pseudo-count pulls sparse neighbourhoods to the
target's mean instead of a 0/1 verdict from one neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.predictors._common import EmbeddingPredictor


class KNNPredictor(EmbeddingPredictor):
    kind = "knn"

    def __init__(self, k: int = 10, smoothing: float = 1.0, embedder: Any = None, **post: Any) -> None:
        super().__init__(embedder, **post)
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.smoothing = smoothing

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        self.X = (E / np.maximum(norms, 1e-12)).astype(np.float32)
        self.Y = Y.astype(np.float32)
        self.mean = np.nan_to_num(np.nanmean(Y, axis=0), nan=0.5).astype(np.float32)

    def _raw(self, E: np.ndarray) -> np.ndarray:
        E = np.asarray(E, dtype=np.float32)
        E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        sims = E @ self.X.T  # (m, n)
        k = min(self.k, self.X.shape[0])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0)  # (m, k)
        ys = self.Y[idx]  # (m, k, T)
        known = ~np.isnan(ys)
        wk = w[:, :, None] * known
        num = (wk * np.nan_to_num(ys)).sum(1) + self.smoothing * self.mean
        den = wk.sum(1) + self.smoothing
        P = num / den
        return P.astype(np.float64)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"X": self.X, "Y": self.Y, "mean": self.mean}

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "smoothing": self.smoothing}

    def _restore(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        self.k = int(params["k"])
        self.smoothing = float(params["smoothing"])
        self.X, self.Y, self.mean = arrays["X"], arrays["Y"], arrays["mean"]
