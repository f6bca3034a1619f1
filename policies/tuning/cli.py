"""`routerctl tune ...` / `python -m policies.tuning ...`: collect, train, eval, calibrate, simulate.

`register(subparsers)` adds the `tune` command to routerctl's parser; `main(argv)` runs the same
subcommands stand-alone. Results go to stdout (one JSON object with --json), progress bars to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _emit(args: argparse.Namespace, obj: dict, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, default=_jsonable)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _jsonable(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required,
                   help="RouteLLM evals folder (e.g. ../shared/datasets/routellm) or a CSV/JSONL table "
                        "(wide user file, or the JSONL `tune collect` writes)")
    p.add_argument("--dataset", default=None,
                   help="mmlu | gsm8k | mt_bench | all (RouteLLM folder), or a dataset name in a file")
    p.add_argument("--mt-bench-threshold", type=float, default=None,
                   help="MT Bench quality = 1 if judge score >= this, instead of score/10")


def _load_table(args: argparse.Namespace, dataset: str | None = None):
    from policies.tuning import datasets

    kw = {}
    if Path(args.data).is_dir():
        kw["mt_bench_threshold"] = args.mt_bench_threshold
    return datasets.load(args.data, dataset if dataset is not None else args.dataset, **kw)


def embeddings_for(table, encoder: str, use_cache: bool = True) -> np.ndarray:
    """Embed per dataset, so the cache of `mmlu` serves both its CV run and a holdout run."""
    from policies.tuning.embed import embed

    out = np.zeros((len(table), 0), dtype=np.float32)
    parts = {}
    for name in dict.fromkeys(table.dataset):
        idx = np.flatnonzero(table.dataset == name)
        parts[name] = (idx, embed([table.prompts[i] for i in idx], encoder, use_cache))
    dim = next(iter(parts.values()))[1].shape[1]
    out = np.zeros((len(table), dim), dtype=np.float32)
    for idx, arr in parts.values():
        out[idx] = arr
    return out


# --- eval --------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from policies.tuning import evaluate
    from policies.tuning.scorers import DEFAULT_SCORERS, SCORERS

    names = [n for n in (args.policies.split(",") if args.policies is not None else DEFAULT_SCORERS) if n]
    names = [n for n in names if n not in ("random", "oracle")]  # always reported
    bad = [n for n in names if n not in SCORERS]
    if bad:
        print(f"unknown policies {bad}; choose from {sorted(SCORERS)} (random, oracle always run)",
              file=sys.stderr)
        return 2
    if args.holdout:
        protocol = evaluate.Protocol("holdout", holdout=args.holdout)
        table = _load_table(args, "all")
    else:
        protocol = evaluate.Protocol("cv", k=args.cv)
        table = _load_table(args)
    if table.answers is None and "cascade-weak-answer" in names:
        names.remove("cascade-weak-answer")  # needs the weak model's answer texts (RouteLLM GSM8K)
        print("skipping cascade-weak-answer: no answer texts in this table", file=sys.stderr)
    need_emb = any(SCORERS[n]().needs_embeddings for n in names)
    emb = embeddings_for(table, args.encoder, not args.no_cache) if need_emb else None
    report = evaluate.evaluate(table, protocol, names, emb, seed=args.seed, progress=not args.quiet)
    report["encoder"] = args.encoder if need_emb else None
    text = evaluate.markdown(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{'-'.join(report['dataset'])}-{protocol.label().replace(' ', '-')}"
        (out / f"{stem}.md").write_text(text)
        files = [str(out / f"{stem}.md")]
        if not args.no_plots:
            files += evaluate.plot(report, str(out / stem))
        report["files"] = files
        text += "\nwrote " + ", ".join(files) + "\n"
    _emit(args, report, text)
    return 0


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="replay routers offline; APGR, CPT, AIQ vs random and oracle",
                       description="Replay routers offline over a dataset table with K-fold CV or a "
                                   "leave-one-dataset-out holdout, with RouteLLM's metrics.")
    _add_data_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cv", type=int, default=5, help="K-fold cross-validation within the dataset")
    g.add_argument("--holdout", default=None,
                   help="train on the other datasets in --data, test on this one")
    p.add_argument("--policies", default=None,
                   help="comma list of scorers (default: all in policies/tuning/scorers.py DEFAULT_SCORERS)")
    p.add_argument("--encoder", default="minilm", choices=["minilm", "hash"],
                   help="prompt embedding for knn/logistic/mlp/mf (cached under $ROUTER_CACHE_DIR)")
    p.add_argument("--no-cache", action="store_true", help="recompute embeddings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the markdown report and PNG plots here")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_eval)


# --- the others live beside their logic --------------------------------------------------------------


def _lazy(module: str, fn: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"policies.tuning.{module}").__dict__[fn](args)

    return run


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="fit a quality predictor and save the artifact the policy loads",
                       description="Fit a policies.predictors quality predictor on a dataset table and "
                                   "save the artifact the serving policy loads.")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="artifact directory (weights.npz + meta.json)")
    p.add_argument("--kind", default="logistic", choices=["knn", "logistic", "mf"],
                   help="policies.predictors class to fit (logistic calibrated best offline)")
    p.add_argument("--encoder", default="minilm", choices=["minilm"],
                   help="must match what serving embeds with (the packaged MiniLM)")
    p.add_argument("--k", type=int, default=40, help="neighbours (knn)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("train", "cmd_train"))


def _calibrate_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="pick threshold / min_quality for a strong share or budget",
                       description="Choose the quality-threshold policy's threshold (or cheapest-fit's "
                                   "min_quality) for a target strong-call share or a cost budget, and "
                                   "print the cluster.yaml snippet.")
    _add_data_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--strong-share", type=float, help="target fraction of calls to the strong target")
    g.add_argument("--budget-per-1k", type=float, help="USD per 1k requests to stay under")
    g.add_argument("--min-pgr", type=float, help="smallest strong share reaching this PGR (0-1)")
    p.add_argument("--policy", default="quality-threshold", choices=["quality-threshold", "cheapest-fit"])
    p.add_argument("--score", default="weak-quality", choices=["weak-quality", "win-rate"],
                   help="quality-threshold's score (see policies/baselines.py)")
    p.add_argument("--kind", default="logistic", choices=["knn", "logistic", "mf"],
                   help="policies.predictors class serving will load (scores are out-of-fold)")
    p.add_argument("--artifact", default="PATH/TO/ARTIFACT", help="artifact dir to name in the snippet")
    p.add_argument("--encoder", default="minilm", choices=["minilm", "hash"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("calibrate", "cmd_calibrate"))


def _collect_parser(sub) -> None:
    p = sub.add_parser("collect", help="run a gold-answer benchmark through every target of a cluster",
                       description="Send benchmark prompts to each target (pinned by id), score the "
                                   "answers, record tokens, TTFT and latency; resumable JSONL.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="router base URL")
    p.add_argument("--targets", default=None, help="comma list of target ids (default: GET /v1/models)")
    p.add_argument("--bench", default="gsm8k",
                   help="gsm8k (needs --data) | a JSONL with prompt and answer (and optional choices)")
    p.add_argument("--data", default=None, help="RouteLLM folder, for --bench gsm8k")
    p.add_argument("--out", required=True, help="JSONL to append to (resumes: done pairs are skipped)")
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--api-key", default=None, help="bearer token (default: $ROUTER_API_KEY)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("collect", "cmd_collect"))


def _simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="discrete-event simulation of a cluster running real policies",
                       description="Simulate targets x replicas under Poisson or bursty load and compare "
                                   "policies on SLO attainment, cost, quality and per-target load.")
    p.add_argument("--config", default=None, help="scenario JSON/YAML (default: built-in 3-target scenario)")
    p.add_argument("--policies", default="cheapest-fit,quality-threshold,always-strongest")
    p.add_argument("--rate", default=None,
                   help="requests per second, or a comma list to sweep (default: the scenario's)")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--arrivals", default="poisson", choices=["poisson", "bursty"])
    p.add_argument("--replicas-scale", type=float, default=1.0, help="multiply every target's replicas")
    p.add_argument("--fit-from", default=None,
                   help="a `tune collect` JSONL: fit each scenario target's service model (prefill line, "
                        "time per output token) from its measured latencies, matched by target id")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("simulate", "cmd_simulate"))


def register(subparsers) -> argparse.ArgumentParser:
    """Add `tune` with its subcommands to a parent parser's subparsers (routerctl calls this)."""
    tune = subparsers.add_parser("tune", help="policy-tuning lab: collect, train, eval, calibrate, simulate",
                                 description="Policy-tuning lab.")
    sub = tune.add_subparsers(dest="tune_command", metavar="{collect,train,eval,calibrate,simulate}")
    sub.required = True
    for add in (_collect_parser, _train_parser, _eval_parser, _calibrate_parser, _simulate_parser):
        add(sub)
    return tune


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.tuning", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "tune":
        argv = ["tune", *argv]  # `python -m policies.tuning eval ...` works without the `tune` word
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
