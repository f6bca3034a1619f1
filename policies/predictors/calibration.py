"""Per-target probability calibration and familiarity (support) of a prompt, both fitted at training time.

Calibration maps a predictor's raw score for a target to the frequency with which that target actually
answered well at that score, fitted on out-of-fold predictions (each training prompt scored by a model
that did not see it), so the map corrects the predictor's real bias instead of its training fit.
  * `isotonic`: pool-adjacent-violators on (raw, label), a non-decreasing step function, applied with
    linear interpolation between block centres (flat beyond the ends).
  * `platt`: sigmoid(a * logit(raw) + b), two numbers per target, for small label counts.
Both are stored as plain arrays in the predictor's artifact (see `_common.EmbeddingPredictor`).

Support says how much a prompt resembles the training prompts: its best cosine similarity to a random
subset of them (the anchors), mapped to [0, 1] by two thresholds fitted on the training prompts (1 at
or above the `quantile`-th percentile of their similarity to the other anchors, 0 at `width` below).
Predictions are shrunk towards the target's prior by (1 - support): a prompt unlike anything seen gets
the prior, not a confident extrapolation.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6


def isotonic_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Knots (xs, ys) of the weighted least-squares non-decreasing fit of y on x (PAV)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    if x.size == 0:
        return np.array([0.0, 1.0]), np.array([0.5, 0.5])
    # Pool equal scores first: PAV must treat a tie as one point, or the labels' order inside it
    # (all 0s before all 1s) would decide the fit.
    ux, inv = np.unique(x, return_inverse=True)
    w_sum = np.bincount(inv, weights=w)
    y_sum = np.bincount(inv, weights=w * y)
    x, y, w = ux, y_sum / np.maximum(w_sum, 1e-300), w_sum
    # Blocks as parallel lists (sum of w*y, sum of w, sum of w*x); merge while the order is violated.
    sy: list[float] = []
    sw: list[float] = []
    sx: list[float] = []
    for xi, yi, wi in zip(x.tolist(), y.tolist(), w.tolist(), strict=True):
        sy.append(wi * yi)
        sw.append(wi)
        sx.append(wi * xi)
        while len(sy) > 1 and sy[-2] * sw[-1] >= sy[-1] * sw[-2]:
            last_y, last_w, last_x = sy.pop(), sw.pop(), sx.pop()
            sy[-1] += last_y
            sw[-1] += last_w
            sx[-1] += last_x
    wa = np.array(sw)
    return np.array(sx) / wa, np.array(sy) / wa


def isotonic_apply(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.interp(x, xs, ys)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def platt_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """(a, b) of sigmoid(a * logit(x) + b) fitted by Newton's method on (soft) labels y."""
    z = _logit(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)

    def loss(a: float, b: float) -> float:
        u = a * z + b
        return float(np.sum(np.logaddexp(0.0, u) - y * u) + 0.5 * l2 * (a - 1.0) ** 2)

    a, b = 1.0, 0.0
    cur = loss(a, b)
    for _ in range(iters):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * z + b)))
        g = np.array([np.dot(p - y, z) + l2 * (a - 1.0), np.sum(p - y)])
        h = p * (1 - p)
        H = np.array([[np.dot(h, z * z) + l2, np.dot(h, z)], [np.dot(h, z), np.sum(h) + l2]])
        try:
            step = np.linalg.solve(H + 1e-9 * np.eye(2), g)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-6 and loss(a - t * step[0], b - t * step[1]) > cur:
            t *= 0.5  # damped Newton: saturated scores make the full step overshoot
        if t <= 1e-6:
            break
        a, b = a - t * step[0], b - t * step[1]
        new = loss(a, b)
        if cur - new < 1e-10 * max(1.0, abs(cur)):
            break
        cur = new
    return float(a), float(b)


def platt_apply(a: float, b: float, x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * (a * _logit(x) + b)))


class Calibrators:
    """One calibration map per target column, stored as flat arrays (artifact friendly)."""

    def __init__(self, method: str, xs: np.ndarray, ys: np.ndarray, offsets: np.ndarray) -> None:
        self.method, self.xs, self.ys, self.offsets = method, xs, ys, offsets

    @classmethod
    def fit(cls, method: str, raw: np.ndarray, Y: np.ndarray) -> Calibrators:
        """Maps fitted per column of raw (n, T) against labels Y (n, T), NaN labels skipped."""
        if method not in ("isotonic", "platt"):
            raise ValueError(f"unknown calibration {method!r}; choose isotonic or platt")
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for j in range(Y.shape[1]):
            m = ~np.isnan(Y[:, j])
            if method == "isotonic":
                kx, ky = isotonic_fit(raw[m, j], Y[m, j])
            else:
                a, b = platt_fit(raw[m, j], Y[m, j]) if m.any() else (1.0, 0.0)
                kx, ky = np.array([a]), np.array([b])
            xs.append(kx)
            ys.append(ky)
        offsets = np.cumsum([0] + [len(k) for k in xs])
        return cls(method, np.concatenate(xs), np.concatenate(ys), offsets)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated copy of raw (m, T)."""
        out = np.empty_like(raw, dtype=np.float64)
        o = self.offsets
        for j in range(raw.shape[1]):
            kx, ky = self.xs[o[j] : o[j + 1]], self.ys[o[j] : o[j + 1]]
            if self.method == "isotonic":
                out[:, j] = isotonic_apply(kx, ky, raw[:, j])
            else:
                out[:, j] = platt_apply(float(kx[0]), float(ky[0]), raw[:, j])
        return out


def support_anchors(E: np.ndarray, max_anchors: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(anchors, held-out similarity): up to max_anchors unit training rows, and for the training rows
    the best cosine similarity to an anchor other than themselves (so the distribution is that of a new
    prompt from the same source, not of a prompt compared with itself)."""
    E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    n = len(E)
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, max_anchors), replace=False))
    A = E[pick].astype(np.float32)
    S = E @ A.T
    S[pick, np.arange(len(pick))] = -np.inf  # a row is not its own support
    best = S.max(axis=1) if len(pick) > 1 else np.ones(n)
    return A, best[np.isfinite(best)]


def support_thresholds(sim: np.ndarray, quantile: float, width: float) -> tuple[float, float]:
    """(lo, hi): support 1 at or above the quantile of the training prompts' held-out similarity, 0 at
    `width` below it."""
    hi = float(np.quantile(sim, quantile)) if len(sim) else 1.0
    return hi - width, hi
