"""Quality predictors: P(answer acceptable) per target for a prompt.

Every predictor implements `policies.base.QualityPredictor.predict(prompt, targets) -> {id: p}` for the
router. The trainable ones (knn, logistic, mf, irt, ensemble) score sentence embeddings of the prompt (packaged
all-MiniLM-L6-v2, see `embed.py`) and share one API:

    pred = LogisticPredictor().fit(E_or_prompts, {"small": y_small, "big": y_big})  # y in [0,1], NaN=unknown
    pred.save("artifacts/logistic")                   # directory: weights.npz + meta.json, no pickle
    pred = load_predictor("artifacts/logistic")       # any kind, dispatched on meta.json's "kind"
    pred.predict("Prove that ...", targets)           # one prompt: embed (LRU cache) + score
    pred.predict_embeddings(E)                        # BULK / OFFLINE PATH: E (n, 384) float32 ->
                                                      #   {target_id: (n,) array}, no model load needed

The tuning lab should embed a dataset once (`Embedder().embed(prompts)`), keep E, and call `fit` /
`predict_embeddings` on E: thousands of prompts score in milliseconds. Targets the predictor was not
trained on get their `Target.quality_prior` from `predict` and are absent from `predict_embeddings`.
torch/transformers load only when a prompt must be embedded.

Every trainable predictor also takes `calibration="isotonic"|"platt"` (per-target maps fitted on
out-of-fold predictions at training time) and `shrink=True` (pull predictions towards the target's
training mean when a prompt is unlike the training prompts; `support(prompt)` in [0, 1] says how
alike). Both are stored in the artifact, so serving predicts exactly what training measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.predictors._common import EmbeddingPredictor, read_meta
from policies.predictors.ensemble import EnsemblePredictor
from policies.predictors.irt import IRTPredictor
from policies.predictors.knn import KNNPredictor
from policies.predictors.logistic import LogisticPredictor
from policies.predictors.mf import MFPredictor
from policies.predictors.prior import PriorPredictor

KINDS: dict[str, Any] = {
    "prior": PriorPredictor,
    "knn": KNNPredictor,
    "logistic": LogisticPredictor,
    "mf": MFPredictor,
    "irt": IRTPredictor,
    "ensemble": EnsemblePredictor,
}


def load_predictor(path: str | Path, embedder: Any = None) -> Any:
    """Load any predictor artifact directory written by `.save(path)`."""
    kind = read_meta(Path(path))["kind"]
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown predictor kind {kind!r}")
    return KINDS[kind].load(path, embedder=embedder)


__all__ = [
    "EmbeddingPredictor",
    "EnsemblePredictor",
    "IRTPredictor",
    "KINDS",
    "KNNPredictor",
    "LogisticPredictor",
    "MFPredictor",
    "PriorPredictor",
    "load_predictor",
]
