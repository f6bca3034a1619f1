"""Ensemble: the weighted mean of several predictors over the same prompt embedding.

kNN is local (what the most similar training prompts got), the parametric predictors (logistic, mf,
irt) are global (a direction in embedding space per target); they err on different prompts, so their
mean is more reliable than either, notably on prompts whose neighbourhood is thin. Members are given
as `[{"kind": "knn", "k": 80}, {"kind": "logistic"}]` (any kind of `policies.predictors` with
embeddings; its constructor parameters beside `kind`), each fitted on the same data, and saved in
`member-<i>/` subdirectories of the ensemble's artifact. Calibration and shrinkage (the base class's)
apply to the mean; members may also carry their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.predictors._common import EmbeddingPredictor

DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = ({"kind": "knn", "k": 80}, {"kind": "logistic"})


def _member_class(kind: str) -> Any:
    from policies.predictors import KINDS

    cls = KINDS.get(kind)
    if cls is None or not issubclass(cls, EmbeddingPredictor) or cls is EnsemblePredictor:
        raise ValueError(f"ensemble member kind {kind!r} must be an embedding predictor kind")
    return cls


class EnsemblePredictor(EmbeddingPredictor):
    kind = "ensemble"

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS,
        weights: Sequence[float] | None = None,
        embedder: Any = None,
        **post: Any,
    ) -> None:
        super().__init__(embedder, **post)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if weights is not None and (len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError("weights: one non-negative number per member, not all zero")
        self.members_spec = [dict(m) for m in members]
        for m in self.members_spec:
            _member_class(str(m.get("kind")))
        self.weights = [float(w) for w in weights] if weights is not None else None
        self.members: list[EmbeddingPredictor] = []

    def _w(self) -> np.ndarray:
        w = np.ones(len(self.members_spec)) if self.weights is None else np.asarray(self.weights)
        return w / w.sum()

    def _fit(self, E: np.ndarray, Y: np.ndarray) -> None:
        labels = {t: Y[:, j] for j, t in enumerate(self.targets)}
        self.members = []
        for spec in self.members_spec:
            params = {k: v for k, v in spec.items() if k != "kind"}
            self.members.append(_member_class(spec["kind"])(**params, embedder=self._embedder).fit(E, labels))

    def _raw(self, E: np.ndarray) -> np.ndarray:
        w = self._w()
        return sum(wi * m.predict_matrix(E) for wi, m in zip(w, self.members, strict=True))  # type: ignore[return-value]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _params(self) -> dict[str, Any]:
        return {"members": self.members_spec, "weights": self.weights}

    def _restore(self, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        self.members_spec = [dict(m) for m in params["members"]]
        self.weights = params.get("weights")

    def save(self, path: str | Path) -> Path:
        d = super().save(path)
        for i, m in enumerate(self.members):
            m.save(d / f"member-{i}")
        return d

    @classmethod
    def load(cls, path: str | Path, embedder: Any = None) -> EnsemblePredictor:
        obj = super().load(path, embedder=embedder)
        d = Path(path)
        obj.members = [
            _member_class(spec["kind"]).load(d / f"member-{i}", embedder=embedder)
            for i, spec in enumerate(obj.members_spec)
        ]
        return obj
