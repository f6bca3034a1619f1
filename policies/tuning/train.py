"""`tune train`: fit a quality predictor on a dataset table and save the artifact serving loads.

The predictors are the policy engine's (`policies.predictors`: knn, logistic, mf); the artifact is the
directory their `.save()` writes (weights.npz + meta.json, no pickle), loaded by the serving policy with
`policies.predictors.load_predictor(path)`. Embeddings come from the tuning cache, so training on a
dataset `tune eval` has seen starts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from policies.tuning.datasets import RouteTable


def kinds() -> tuple[str, ...]:
    """Every predictor kind `policies.predictors` can load (the registry serving reads)."""
    from policies.predictors import KINDS as REGISTERED

    return tuple(REGISTERED)


KINDS = ("knn", "logistic", "mf")  # the embedding predictors of the first release (kept for imports)


def make_predictor(kind: str, **params: Any) -> Any:
    from policies.predictors import KINDS as REGISTERED

    if kind not in REGISTERED:
        raise ValueError(f"unknown predictor kind {kind!r}; choose from {sorted(REGISTERED)}")
    return REGISTERED[kind](**params)


def fit(table: RouteTable, emb: np.ndarray, kind: str = "knn", **params: Any) -> Any:
    """A fitted engine predictor on the table's per-target quality."""
    if len(emb) != len(table):
        raise ValueError("one embedding per prompt")
    if kind == "prior" and params:
        raise ValueError("the prior predictor takes no parameters")
    labels = {t: table.quality[:, j] for j, t in enumerate(table.targets)}
    return make_predictor(kind, **params).fit(emb, labels)


def cmd_train(args: argparse.Namespace) -> int:
    from policies.tuning.cli import _emit, _load_table, embeddings_for

    table = _load_table(args)
    emb = (np.zeros((len(table), 1), np.float32) if args.kind == "prior"
           else embeddings_for(table, args.encoder))
    params = dict(json.loads(args.params)) if getattr(args, "params", None) else {}
    if args.kind == "knn" and args.k is not None:
        params["k"] = args.k
    pred = fit(table, emb, args.kind, **params)
    path = Path(pred.save(args.out))
    from policies.predictors.featurizers import ENCODERS, record

    if args.kind != "prior" and args.encoder in ENCODERS:
        from policies.tuning.embed import table_preambles

        # serving builds the featurizer this names and strips the same shared preambles (featurizers.py)
        record(path, args.encoder, preambles=table_preambles(list(table.prompts), list(table.dataset)))
    quality = ({"kind": "prior", "table": pred.table} if args.kind == "prior"
               else {"kind": args.kind, "artifact": str(path)})
    info = {"artifact": str(path), "kind": args.kind, "rows": len(table), "targets": table.targets,
            "encoder": args.encoder, "params": params, "quality": quality,
            "mean_quality": dict(zip(table.targets, table.quality.mean(0).round(4).tolist(), strict=True)),
            "load_with": f"policies.predictors.load_predictor({str(path)!r})"}
    if args.encoder not in ENCODERS and args.kind != "prior":
        info["warning"] = (f"trained on {args.encoder!r} features, which serving does not build: load it "
                           "with an explicit embedder (tests, offline replay) only")
        print(f"warning: {info['warning']}", file=sys.stderr)
    snippet = "quality:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in quality.items())
    _emit(args, info, f"wrote {path}: {args.kind} predictor on {len(table)} prompts x "
                      f"{len(table.targets)} targets; load with {info['load_with']}\n\n"
                      f"# cluster.yaml\n{snippet}")
    return 0
