"""Matrix factorisation over (prompt, target), after RouteLLM's MF router (arXiv 2406.18665).

RouteLLM scores s(t, q) = w2 . (v_t * (W1 e_q)): a learned projection of the prompt embedding meets a
learned vector per model. With per-target acceptability labels (not pairwise wins) this is
P(acceptable | q, t) = sigmoid(v_t . (P e_q) + b_t) with P of rank `dim` shared by all targets: targets
with few labels borrow the prompt structure learned from the others, which per-target logistic cannot.
Trained with full-batch Adam on masked BCE + L2, seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.predictors._common import AdamPredictor, adam, masked_bce_grad, sigmoid


class MFPredictor(AdamPredictor):
    kind = "mf"
    HYPER = {"dim": int, "l2": float, "steps": int, "lr": float, "seed": int}
    dim: int
    l2: float
    steps: int
    lr: float
    seed: int

    def __init__(
        self, dim: int = 32, l2: float = 1e-3, steps: int = 400, lr: float = 0.02, seed: int = 0,
        embedder: Any = None, **post: Any,
    ) -> None:
        super().__init__(embedder, {"dim": dim, "l2": l2, "steps": steps, "lr": lr, "seed": seed}, **post)

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        rng, E, mask = self._start(E, Y)
        d, T = E.shape[1], Y.shape[1]
        p = {
            "P": rng.normal(0, 1.0 / np.sqrt(d), (self.dim, d)),
            "V": rng.normal(0, 0.1, (T, self.dim)),
            "b": self._base_logits(Y),
        }
        l2 = self.l2

        def grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            H = E @ p["P"].T  # (n, dim)
            dZ = masked_bce_grad(sigmoid(H @ p["V"].T + p["b"]), Y, mask)  # (n, T)
            dH = dZ @ p["V"]
            return {"P": dH.T @ E + l2 * p["P"], "V": dZ.T @ H + l2 * p["V"], "b": dZ.sum(0)}

        adam(p, grad, self.steps, self.lr)
        self.params = {k: v.astype(np.float32) for k, v in p.items()}

    def _raw(self, E: np.ndarray) -> np.ndarray:
        p = self.params
        H = np.asarray(E, dtype=np.float32) @ p["P"].T
        P = sigmoid((H @ p["V"].T + p["b"]).astype(np.float64))
        return P
