"""IRT-style quality: target ability against prompt difficulty and discrimination, from the embedding.

Item response theory scores a test taker's ability against a question's difficulty; here the takers
are targets and the questions prompts, with the question parameters predicted from the embedding so
that a new prompt has them too:

    logit P(ok | prompt e, target t) = a(e) * theta_t - d(e) + u_t . (V e)

  a(e) = softplus(w_a . e + c_a)   discrimination (> 0): how sharply the prompt separates strong from
                                   weak targets
  d(e) = w_d . e + c_d             difficulty, shared by all targets
  theta_t                          the target's ability, one number
  u_t . (V e)                      rank-`dim` skills: what a target is good at beyond overall ability

The loss sums binary cross-entropy over every known label and adds a Gaussian prior on each target's
parameters (theta_t around logit(prior_t), u_t around 0) whose weight does not grow with the label
count: a target with hundreds of labels is fitted by its data, a target with a handful stays near its
prior ability while still inheriting the prompt difficulty learned from all the others. `priors`
({target: P(ok)}, e.g. the targets' quality_prior) sets prior_t; without one, the mean of all labels.
Full-batch Adam, seeded, in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.predictors._common import AdamPredictor, adam, sigmoid

_SOFTPLUS_ONE = float(np.log(np.e - 1.0))  # softplus(_SOFTPLUS_ONE) = 1


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p))


def _priors(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(value or {}).items()}


class IRTPredictor(AdamPredictor):
    kind = "irt"
    HYPER = {"dim": int, "l2": float, "prior_weight": float, "steps": int, "lr": float, "seed": int,
             "priors": _priors}
    dim: int
    l2: float
    prior_weight: float
    steps: int
    lr: float
    seed: int
    priors: dict[str, float]

    def __init__(
        self, dim: int = 8, l2: float = 1e-3, prior_weight: float = 2.0, steps: int = 200, lr: float = 0.06,
        seed: int = 0, priors: Mapping[str, float] | None = None, embedder: Any = None, **post: Any,
    ) -> None:
        if dim < 0:
            raise ValueError("dim must be >= 0")
        super().__init__(embedder, {"dim": dim, "l2": l2, "prior_weight": prior_weight, "steps": steps,
                                    "lr": lr, "seed": seed, "priors": _priors(priors)}, **post)

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        rng, E, mask = self._start(E, Y)
        n, d = E.shape
        T = Y.shape[1]
        Y0 = np.nan_to_num(Y)
        count = max(int(mask.sum()), 1)
        overall = float(Y0[mask].mean()) if mask.any() else 0.5
        theta0 = _logit(np.array([self.priors.get(t, overall) for t in self.targets]))
        r = self.dim
        p = {
            "theta": theta0.copy(),
            "wa": np.zeros(d), "ca": np.array([_SOFTPLUS_ONE]),
            "wd": np.zeros(d), "cd": np.zeros(1),
            "U": rng.normal(0, 0.01, (T, r)), "V": rng.normal(0, 1.0 / np.sqrt(d), (r, d)),
        }
        # Priors are per target, not per label: scaled by 1/count like the data term they stand beside.
        tau = self.prior_weight / count
        l2 = self.l2

        def grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            s = E @ p["wa"] + p["ca"][0]
            a = _softplus(s)
            diff = E @ p["wd"] + p["cd"][0]
            H = E @ p["V"].T
            Z = a[:, None] * p["theta"][None, :] - diff[:, None] + H @ p["U"].T
            G = np.where(mask, sigmoid(Z) - Y0, 0.0) / count
            da = G @ p["theta"]
            ds = da * sigmoid(s)
            dd = -G.sum(1)
            dH = G @ p["U"]
            return {
                "theta": G.T @ a + tau * (p["theta"] - theta0),
                "wa": E.T @ ds + l2 * p["wa"], "ca": np.array([ds.sum()]),
                "wd": E.T @ dd + l2 * p["wd"], "cd": np.array([dd.sum()]),
                "U": G.T @ H + tau * p["U"], "V": dH.T @ E + l2 * p["V"],
            }

        adam(p, grad, self.steps, self.lr)
        self.params = {k: v.astype(np.float32) for k, v in p.items()}

    def _raw(self, E: np.ndarray) -> np.ndarray:
        p = self.params
        E = np.asarray(E, dtype=np.float32)
        a = _softplus((E @ p["wa"] + p["ca"][0]).astype(np.float64))
        diff = (E @ p["wd"] + p["cd"][0]).astype(np.float64)
        Z = a[:, None] * p["theta"][None, :] - diff[:, None] + (E @ p["V"].T) @ p["U"].T
        return sigmoid(Z.astype(np.float64))

    def difficulty(self, E: np.ndarray) -> np.ndarray:
        """(m,) the prompts' predicted difficulty d(e) (higher = fewer targets answer well)."""
        p = self.params
        return (np.asarray(E, dtype=np.float32) @ p["wd"] + p["cd"][0]).astype(np.float64)

    @property
    def ability(self) -> dict[str, float]:
        """{target: theta}: the fitted overall ability of each target."""
        return {t: float(v) for t, v in zip(self.targets, self.params["theta"], strict=True)}
