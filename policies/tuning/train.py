"""`tune train`: fit a quality predictor on a dataset table and save the artifact serving loads.

The predictors are the policy engine's (`policies.predictors`: knn, logistic, mf); the artifact is the
directory their `.save()` writes (weights.npz + meta.json, no pickle), loaded by the serving policy with
`policies.predictors.load_predictor(path)`. Embeddings come from the tuning cache, so training on a
dataset `tune eval` has seen starts at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from policies.tuning.datasets import RouteTable

KINDS = ("knn", "logistic", "mf")


def make_predictor(kind: str, **params: Any) -> Any:
    from policies.predictors import KNNPredictor, LogisticPredictor, MFPredictor

    classes = {"knn": KNNPredictor, "logistic": LogisticPredictor, "mf": MFPredictor}
    if kind not in classes:
        raise ValueError(f"unknown predictor kind {kind!r}; choose from {KINDS}")
    return classes[kind](**params)


def fit(table: RouteTable, emb: np.ndarray, kind: str = "knn", **params: Any) -> Any:
    """A fitted engine predictor on the table's per-target quality."""
    if len(emb) != len(table):
        raise ValueError("one embedding per prompt")
    labels = {t: table.quality[:, j] for j, t in enumerate(table.targets)}
    return make_predictor(kind, **params).fit(emb, labels)


def cmd_train(args: argparse.Namespace) -> int:
    from policies.tuning.cli import _emit, _load_table, embeddings_for

    table = _load_table(args)
    emb = embeddings_for(table, args.encoder)
    params = {"k": args.k} if args.kind == "knn" else {}
    pred = fit(table, emb, args.kind, **params)
    path = Path(pred.save(args.out))
    info = {"artifact": str(path), "kind": args.kind, "rows": len(table), "targets": table.targets,
            "encoder": args.encoder,
            "mean_quality": dict(zip(table.targets, table.quality.mean(0).round(4).tolist(), strict=True)),
            "load_with": f"policies.predictors.load_predictor({str(path)!r})"}
    _emit(args, info, f"wrote {path}: {args.kind} predictor on {len(table)} prompts x "
                      f"{len(table.targets)} targets; load with {info['load_with']}")
    return 0
