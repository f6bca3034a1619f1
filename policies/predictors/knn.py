"""k-nearest-neighbour quality: the labels of the k most similar training prompts (cosine similarity).

P(acceptable | prompt, t) = (sum_i w_i y_it + a * mean_t) / (sum_i w_i + a) over the k neighbours that
have a label for t, w_i = max(similarity, 0); the `a` pseudo-count pulls sparse neighbourhoods to the
target's mean instead of a 0/1 verdict from one neighbour.

`tune_k` (a grid of k values) chooses k at training time: the k whose out-of-fold predictions (5 folds
of the training prompts, each scored against the other four) have the lowest Brier score over all
targets. One pass per fold ranks the neighbours once and reads every k off cumulative sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from policies.predictors._common import EmbeddingPredictor


class KNNPredictor(EmbeddingPredictor):
    kind = "knn"

    def __init__(
        self,
        k: int = 10,
        smoothing: float = 1.0,
        tune_k: Sequence[int] | None = None,
        embedder: Any = None,
        **post: Any,
    ) -> None:
        super().__init__(embedder, **post)
        if k < 1 or (tune_k is not None and (not tune_k or min(tune_k) < 1)):
            raise ValueError("k (and every tune_k value) must be >= 1")
        self.k = k
        self.smoothing = smoothing
        self.tune_k = tuple(int(v) for v in tune_k) if tune_k else None
        self.k_scores: dict[int, float] = {}

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        self.X = (E / np.maximum(norms, 1e-12)).astype(np.float32)
        self.Y = Y.astype(np.float32)
        self.mean = np.nan_to_num(np.nanmean(Y, axis=0), nan=0.5).astype(np.float32)
        if self.tune_k and len(E) > 10:
            self.k_scores = self._brier_by_k(self.tune_k)
            self.k = min(self.k_scores, key=lambda k: (self.k_scores[k], k))

    def _brier_by_k(self, grid: Sequence[int], folds: int = 5) -> dict[int, float]:
        """Out-of-fold Brier score (mean over known labels) of each k in grid."""
        X, Y = self.X, self.Y
        n = len(X)
        known = ~np.isnan(Y)
        Y0 = np.nan_to_num(Y)
        sse = dict.fromkeys(grid, 0.0)
        for f in np.array_split(np.random.default_rng(0).permutation(n), folds):
            rest = np.setdiff1d(np.arange(n), f)
            kmax = min(max(grid), len(rest))
            sims = X[f] @ X[rest].T
            idx = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax]
            top = np.take_along_axis(sims, idx, axis=1)
            order = np.argsort(-top, axis=1)
            idx, top = np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)
            w = np.maximum(top, 0.0)[:, :, None] * known[rest][idx]  # (m, kmax, T)
            num = np.cumsum(w * Y0[rest][idx], axis=1)
            den = np.cumsum(w, axis=1)
            for k in grid:
                kk = min(k, kmax) - 1
                P = (num[:, kk] + self.smoothing * self.mean) / (den[:, kk] + self.smoothing)
                sse[k] += float(np.sum(np.where(known[f], (P - Y0[f]) ** 2, 0.0)))
        total = max(int(known.sum()), 1)
        return {k: v / total for k, v in sse.items()}

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
