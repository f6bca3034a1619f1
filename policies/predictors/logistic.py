"""Logistic regression (or a one-hidden-layer MLP) per target on prompt embeddings, trained in numpy.

`hidden=0`: one logistic model per target, z_t = w_t . e + b_t. `hidden>0`: a shared ReLU layer feeds
one logistic head per target. Labels may be soft ([0, 1]) and missing (NaN); training is full-batch Adam
on masked binary cross-entropy with L2, seeded, so the same data gives the same weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.predictors._common import AdamPredictor, adam, masked_bce_grad, sigmoid


class LogisticPredictor(AdamPredictor):
    kind = "logistic"
    HYPER = {"hidden": int, "l2": float, "steps": int, "lr": float, "seed": int}
    hidden: int
    l2: float
    steps: int
    lr: float
    seed: int

    def __init__(
        self, hidden: int = 0, l2: float = 1e-3, steps: int = 300, lr: float = 0.05, seed: int = 0,
        embedder: Any = None, **post: Any,
    ) -> None:
        super().__init__(embedder, {"hidden": hidden, "l2": l2, "steps": steps, "lr": lr, "seed": seed}, **post)

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        rng, E, mask = self._start(E, Y)
        d, T = E.shape[1], Y.shape[1]
        width = self.hidden or d
        p = {"W": rng.normal(0, 0.01, (width, T)), "b": self._base_logits(Y)}
        if self.hidden:
            p["W1"] = rng.normal(0, np.sqrt(2.0 / d), (d, self.hidden))
            p["b1"] = np.zeros(self.hidden)
        l2 = self.l2

        def grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if self.hidden:
                pre = E @ p["W1"] + p["b1"]
                H = np.maximum(pre, 0.0)
            else:
                H = E
            dZ = masked_bce_grad(sigmoid(H @ p["W"] + p["b"]), Y, mask)
            g = {"W": H.T @ dZ + l2 * p["W"], "b": dZ.sum(0)}
            if self.hidden:
                dpre = (dZ @ p["W"].T) * (pre > 0)
                g["W1"] = E.T @ dpre + l2 * p["W1"]
                g["b1"] = dpre.sum(0)
            return g

        adam(p, grad, self.steps, self.lr)
        self.params = {k: v.astype(np.float32) for k, v in p.items()}

    def _raw(self, E: np.ndarray) -> np.ndarray:
        p = self.params
        H = np.asarray(E, dtype=np.float32)
        if "W1" in p:
            H = np.maximum(H @ p["W1"] + p["b1"], 0.0)
        P = sigmoid((H @ p["W"] + p["b"]).astype(np.float64))
        return P
