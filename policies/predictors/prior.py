"""Per-target prior quality: a fixed table, no prompt features.

The table comes from config (`{target_id: P(acceptable)}`) or from `Target.quality_prior`; `fit` sets it
to each target's mean label, so a prior can also be "trained" and saved (meta.json only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from policies.predictors._common import FORMAT, META, label_matrix, read_meta
from policies.types import Target


class PriorPredictor:
    """QualityPredictor returning table[target] or the target's own quality_prior."""

    kind = "prior"

    def __init__(self, table: Mapping[str, float] | None = None) -> None:
        for t, q in (table or {}).items():
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"prior for {t!r} must lie in [0, 1], got {q}")
        self.table = dict(table or {})

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.table)

    def predict(self, prompt: str, targets: Sequence[Target]) -> dict[str, float]:
        table = self.table
        return {t.id: table.get(t.id, t.quality_prior) for t in targets}

    def predict_embeddings(self, E: np.ndarray) -> dict[str, np.ndarray]:
        """Same constant per target for every row of E: lets the tuning lab treat all predictors alike."""
        return {t: np.full(len(E), q) for t, q in self.table.items()}

    def fit(self, X: object, labels: Mapping[str, Sequence[float] | np.ndarray]) -> PriorPredictor:
        n = len(next(iter(labels.values())))
        ids, Y = label_matrix(labels, n)
        means = np.nanmean(np.where(np.isnan(Y), np.nan, Y), axis=0)
        self.table = {t: float(m) for t, m in zip(ids, means, strict=True) if not np.isnan(m)}
        return self

    def save(self, path: str | Path) -> Path:
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "targets": list(self.table),
            "params": {"table": self.table},
        }
        (d / META).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, path: str | Path, embedder: object = None) -> PriorPredictor:
        meta = read_meta(Path(path))
        if meta["kind"] != cls.kind:
            raise ValueError(f"{path} holds a {meta['kind']!r} predictor, not 'prior'")
        return cls(meta["params"]["table"])
