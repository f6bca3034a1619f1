"""Shared parts of the trainable predictors: label matrices, artifacts, masked training, scoring."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from policies.predictors.calibration import Calibrators, support_anchors, support_thresholds
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

    Subclasses implement `_fit(E, Y)`, `_raw(E) -> (m, T)` raw P(ok) and the artifact's arrays/params
    (`_params()` must return the constructor's keyword arguments: folds refit a copy made from them).
    The base adds, as fitted at training time and stored in the artifact:
      * `calibration` ("isotonic" | "platt" | None): per-target maps fitted on `cv_folds` out-of-fold
        predictions (see `calibration.py`), applied to every prediction;
      * `shrink`: predictions pulled towards the target's training mean (`prior`) by 1 - support, the
        prompt's familiarity in [0, 1] (`support(prompt)`, also read by the `utility` policy).
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        embedder: Any = None,
        *,
        calibration: str | None = None,
        cv_folds: int = 5,
        shrink: bool = False,
        support_quantile: float = 0.02,
        support_width: float = 0.2,
        max_anchors: int = 1024,
    ) -> None:
        if calibration not in (None, "isotonic", "platt"):
            raise ValueError(f"unknown calibration {calibration!r}; choose isotonic, platt or None")
        if cv_folds < 2:
            raise ValueError("cv_folds must be >= 2")
        self.targets: tuple[str, ...] = ()
        self._embedder = embedder
        self.calibration, self.cv_folds, self.shrink = calibration, cv_folds, shrink
        self.support_quantile, self.support_width, self.max_anchors = (
            support_quantile, support_width, max_anchors)
        self.prior_: np.ndarray | None = None
        self._cal: Calibrators | None = None
        self._anchors: np.ndarray | None = None
        self._lo, self._hi = 0.0, 0.0

    # -- training ------------------------------------------------------------------------------------
    def fit(self: P, X: np.ndarray | Sequence[str], labels: Mapping[str, Sequence[float] | np.ndarray]) -> P:
        """Train on embeddings (n, d) or on prompts (embedded here), labels {target: (n,) in [0, 1]}."""
        E = self._as_embeddings(X)
        self.targets, Y = label_matrix(labels, E.shape[0])
        self.prior_ = np.nan_to_num(np.nanmean(np.where(np.isnan(Y), np.nan, Y), axis=0), nan=0.5) \
            if len(Y) else np.full(Y.shape[1], 0.5)
        self._cal = None
        self._fit(E, Y)  # first: it may tune hyperparameters (knn's k) that the fold copies then use
        if self.calibration is not None:
            self._cal = Calibrators.fit(self.calibration, self.out_of_fold(E, Y), Y)
        if self.shrink:
            self._anchors, sim = support_anchors(E, self.max_anchors)
            self._lo, self._hi = support_thresholds(sim, self.support_quantile, self.support_width)
        return self

    def out_of_fold(self, E: np.ndarray, Y: np.ndarray, seed: int = 0) -> np.ndarray:
        """(n, T) raw predictions, each row from a copy trained on the other folds."""
        n = len(E)
        folds = np.array_split(np.random.default_rng(seed).permutation(n), min(self.cv_folds, n))
        out = np.empty(Y.shape, dtype=np.float64)
        for f in folds:
            train = np.ones(n, dtype=bool)
            train[f] = False
            part = type(self)(**self._params())
            part.targets = self.targets
            part._fit(E[train], Y[train])
            out[f] = part._raw(E[f])
        return out

    def _as_embeddings(self, X: np.ndarray | Sequence[str]) -> np.ndarray:
        if isinstance(X, np.ndarray):
            if X.ndim != 2:
                raise ValueError("embeddings must be a 2-d array (n, dim)")
            return X.astype(np.float32, copy=False)
        return self.embedder.embed(list(X))

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        raise NotImplementedError

    def _raw(self, E: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from policies.predictors.embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    @property
    def prior(self) -> dict[str, float]:
        """{target: mean training label}: what an unfamiliar prompt is shrunk towards."""
        if self.prior_ is None:
            return {}
        return {t: float(p) for t, p in zip(self.targets, self.prior_, strict=True)}

    def support_embeddings(self, E: np.ndarray) -> np.ndarray:
        """(m,) familiarity in [0, 1] of embedded prompts; all 1 when shrinkage is off."""
        E = np.asarray(E, dtype=np.float32)
        if self._anchors is None:
            return np.ones(len(E))
        E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        best = (E @ self._anchors.T).max(axis=1).astype(np.float64)
        return np.clip((best - self._lo) / max(self._hi - self._lo, 1e-9), 0.0, 1.0)

    def support(self, prompt: str) -> float:
        """Familiarity of one prompt (embedding from the LRU cache that `predict` filled)."""
        if self._anchors is None:
            return 1.0
        return float(self.support_embeddings(self.embedder.embed_one(prompt)[None, :])[0])

    def predict_matrix(self, E: np.ndarray) -> np.ndarray:
        """(m, T) P(acceptable), calibrated and shrunk as fitted, columns in `targets` order."""
        P = self._raw(np.asarray(E, dtype=np.float32)).astype(np.float64)
        if self._cal is not None:
            P = self._cal.apply(P)
        if self._anchors is not None and self.prior_ is not None:
            w = self.support_embeddings(E)[:, None]
            P = w * P + (1.0 - w) * self.prior_[None, :]
        return np.clip(P, 0.0, 1.0)

    def predict_embeddings(self, E: np.ndarray) -> dict[str, np.ndarray]:
        """{target: (n,) P(acceptable)} for precomputed embeddings E (n, dim): the bulk/offline path."""
        P = self.predict_matrix(E)
        return {t: P[:, j] for j, t in enumerate(self.targets)}

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        """QualityPredictor: embed (LRU-cached) and score; unknown targets get their prior."""
        return self._scores(self.embedder.embed_one(prompt)[None, :], targets)[0]

    def predict_batch(self, prompts: Sequence[str], targets: Sequence[Target]) -> list[dict[str, float]]:
        """`predict` for several prompts with one scoring call (one pass over a kNN's index for all)."""
        return self._scores(np.stack([self.embedder.embed_one(p) for p in prompts]), targets)

    def _scores(self, E: np.ndarray, targets: Sequence[Target]) -> list[dict[str, float]]:
        col = self._col
        return [{t.id: float(row[col[t.id]]) if t.id in col else t.quality_prior for t in targets}
                for row in self.predict_matrix(E)]

    @property
    def _col(self) -> dict[str, int]:
        # Cached per targets tuple: predict runs per request and must not rebuild it.
        cache = self.__dict__.get("_col_cache")
        if cache is None or cache[0] is not self.targets:
            cache = (self.targets, {t: j for j, t in enumerate(self.targets)})
            self.__dict__["_col_cache"] = cache
        return cache[1]

    # -- artifacts -----------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {}

    def _restore(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _post_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.prior_ is not None:
            out["post_prior"] = self.prior_
        if self._cal is not None:
            out |= {"post_cal_x": self._cal.xs, "post_cal_y": self._cal.ys, "post_cal_off": self._cal.offsets}
        if self._anchors is not None:
            out["post_anchors"] = self._anchors
        return out

    def _post_params(self) -> dict[str, Any]:
        return {"calibration": self.calibration, "cv_folds": self.cv_folds, "shrink": self.shrink,
                "support_quantile": self.support_quantile, "support_width": self.support_width,
                "max_anchors": self.max_anchors, "support_lo": self._lo, "support_hi": self._hi}

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory: weights.npz (arrays) + meta.json (kind, targets, params)."""
        if not self.targets:
            raise ValueError("fit the predictor before saving it")
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {**self._arrays(), **self._post_arrays()}
        np.savez(d / WEIGHTS, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        meta = {"format": FORMAT, "kind": self.kind, "targets": list(self.targets), "params": self._params(),
                "post": self._post_params()}
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
        post = dict(meta.get("post") or {})
        lo, hi = float(post.pop("support_lo", 0.0)), float(post.pop("support_hi", 0.0))
        EmbeddingPredictor.__init__(obj, embedder, **post)
        obj.targets = tuple(meta["targets"])
        with np.load(d / WEIGHTS, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        obj._restore(arrays, meta.get("params", {}))
        obj.prior_ = arrays.get("post_prior")
        if "post_cal_x" in arrays:
            obj._cal = Calibrators(str(obj.calibration), arrays["post_cal_x"], arrays["post_cal_y"],
                                   arrays["post_cal_off"])
        obj._anchors = arrays.get("post_anchors")
        obj._lo, obj._hi = lo, hi
        return obj


class AdamPredictor(EmbeddingPredictor):
    """An EmbeddingPredictor whose weights (`params`) are fitted by full-batch Adam (`_fit`). Its
    hyper-parameters are its constructor's keyword arguments, listed in `HYPER` (name -> how to read the
    value back from meta.json); they are saved and restored by name."""

    HYPER: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __init__(self, embedder: Any = None, hyper: Mapping[str, Any] | None = None, **post: Any) -> None:
        super().__init__(embedder, **post)
        for name, value in (hyper or {}).items():
            setattr(self, name, value)
        self.params: dict[str, np.ndarray] = {}

    def _start(self, E: np.ndarray, Y: np.ndarray) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
        """(seeded rng, E as float64, mask of known labels): what every `_fit` begins with."""
        return np.random.default_rng(getattr(self, "seed", 0)), E.astype(np.float64), ~np.isnan(Y)

    @staticmethod
    def _base_logits(Y: np.ndarray) -> np.ndarray:
        """Per-target logit of the mean known label (0.5 for a target without any), clipped away from 0/1."""
        base = np.clip(np.nan_to_num(np.nanmean(Y, axis=0), nan=0.5), 1e-3, 1 - 1e-3)
        return np.asarray(np.log(base / (1 - base)))

    def _arrays(self) -> dict[str, np.ndarray]:
        return self.params

    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.HYPER}

    def _restore(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        for name, read in self.HYPER.items():
            setattr(self, name, read(params.get(name)))
        self.params = {k: v for k, v in arrays.items() if not k.startswith("post_")}


def read_meta(d: Path) -> dict[str, Any]:
    meta = json.loads((Path(d) / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: unsupported artifact format {meta.get('format')!r}")
    return meta
