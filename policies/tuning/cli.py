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


def _add_data_args(p: argparse.ArgumentParser, required: bool = True, split: bool = False) -> None:
    p.add_argument("--data", required=required and not split,
                   help="RouteLLM evals folder (e.g. ../shared/datasets/routellm), a folder with train.csv "
                        "+ meta.json (e.g. ../shared/datasets/llmrouter-dc: its train part), or a CSV/JSONL "
                        "table (wide user file, or the JSONL `tune collect` writes)")
    if split:
        p.add_argument("--train", default=None, help="train table (with --test: a given split)")
        p.add_argument("--test", default=None, help="test table (with --train)")
    p.add_argument("--dataset", default=None,
                   help="mmlu | gsm8k | mt_bench | all (RouteLLM folder), or a dataset name in a file")
    p.add_argument("--targets", default=None, help="comma list: use only these targets of the table")
    p.add_argument("--fill-missing-cost", action="store_true",
                   help="price empty cost_usd cells as tokens x list price (says how many) instead of "
                        "rejecting the file")
    p.add_argument("--mt-bench-threshold", type=float, default=None,
                   help="MT Bench quality = 1 if judge score >= this, instead of score/10")


def _load_table(args: argparse.Namespace, dataset: str | None = None):
    from policies.tuning import datasets

    kw: dict = {"fill_missing_cost": getattr(args, "fill_missing_cost", False)}
    if Path(args.data).is_dir() and (Path(args.data) / "mmlu").is_dir():
        kw["mt_bench_threshold"] = args.mt_bench_threshold
    table = datasets.load(args.data, dataset if dataset is not None else args.dataset, **kw)
    return _select(args, table)


def _select(args: argparse.Namespace, table):
    if getattr(args, "targets", None):
        table = table.select([t.strip() for t in args.targets.split(",") if t.strip()])
    return table


def load_protocol_table(args: argparse.Namespace):
    """(table, protocol) from --data with --cv/--holdout, or from --train with --test."""
    from policies.tuning import datasets, evaluate

    train: str | None = getattr(args, "train", None)
    test: str | None = getattr(args, "test", None)
    if bool(train) != bool(test):
        raise SystemExit("error: --train and --test go together")
    if train and test:
        if args.data or getattr(args, "holdout", None):
            raise SystemExit("error: give --data (with --cv or --holdout) or --train/--test, not both")
        fill = getattr(args, "fill_missing_cost", False)
        a = datasets.load(train, args.dataset, fill_missing_cost=fill)
        b = datasets.load(test, args.dataset, fill_missing_cost=fill)
        if set(a.targets) != set(b.targets):
            raise SystemExit(f"error: {train} and {test} have different targets "
                             f"({sorted(set(a.targets) ^ set(b.targets))} in one only)")
        b = b.select(a.targets)
        table = _select(args, datasets.concat([a, b]))
        mask = np.zeros(len(table), dtype=bool)
        mask[len(a):] = True
        return table, evaluate.Protocol("split", test_mask=mask)
    if not args.data:
        raise SystemExit("error: give --data, or --train and --test")
    if getattr(args, "holdout", None):
        return _load_table(args, "all"), evaluate.Protocol("holdout", holdout=args.holdout)
    return _load_table(args), evaluate.Protocol("cv", k=args.cv)


def _json_arg(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        val = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {flag}: not JSON ({e.msg})") from None
    if not isinstance(val, dict):
        raise SystemExit(f"error: {flag}: expected a JSON object")
    return val


def embeddings_for(table, encoder: str, use_cache: bool = True) -> np.ndarray:
    """Embed per dataset, so the cache of `mmlu` serves both its CV run and a holdout run."""
    from policies.tuning.embed import embed

    out = np.zeros((len(table), 0), dtype=np.float32)
    parts = {}
    for name in dict.fromkeys(table.dataset):
        idx = np.flatnonzero(table.dataset == name)
        parts[name] = (idx, embed([table.prompts[i] for i in idx], encoder=encoder, use_cache=use_cache))
    dim = next(iter(parts.values()))[1].shape[1]
    out = np.zeros((len(table), dim), dtype=np.float32)
    for idx, arr in parts.values():
        out[idx] = arr
    return out


def _kinds() -> list[str]:
    from policies.tuning.train import kinds

    return sorted(kinds())


def encoder_names() -> list[str]:
    from policies.tuning.embed import ENCODERS

    return sorted(ENCODERS)


# --- eval --------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from policies.tuning import evaluate
    from policies.tuning.checks import TableError

    try:
        table, protocol = load_protocol_table(args)
    except (TableError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(table.targets) < 2:
        print("error: eval needs at least two targets", file=sys.stderr)
        return 2
    try:
        report = _run_eval(args, table, protocol)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report is None:
        return 2
    text = evaluate.markdown(report) if len(table.targets) == 2 else _many_markdown(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{'-'.join(report['dataset'])}-{protocol.label().replace(' ', '-').replace('/', '-')}"
        (out / f"{stem}.md").write_text(text)
        files = [str(out / f"{stem}.md")]
        if not args.no_plots:
            files += evaluate.plot(report, str(out / stem)) if len(table.targets) == 2 else \
                _many_plot(report, str(out / stem))
        report["files"] = files
        text += "\nwrote " + ", ".join(files) + "\n"
    _emit(args, report, text)
    return 0


def _many_markdown(report: dict) -> str:
    from policies.tuning import report as rep

    return rep.markdown(report)


def _many_plot(report: dict, prefix: str) -> list[str]:
    from policies.tuning import report as rep

    return rep.plot(report, prefix)


def _run_eval(args: argparse.Namespace, table, protocol) -> dict | None:
    from policies.tuning import evaluate, many, replay
    from policies.tuning.scorers import DEFAULT_SCORERS, SCORERS

    two = len(table.targets) == 2
    names = [n.strip() for n in (args.policies.split(",") if args.policies is not None else
                                 (DEFAULT_SCORERS if two else [])) if n.strip()]
    names = [n for n in names if n not in ("random", "oracle")]  # always reported
    pol_params = _json_arg(args.policy_params, "--policy-params")
    pred_params = _json_arg(args.predictor_params, "--predictor-params")
    routers = [n for n in names if ":" in n or n not in SCORERS]
    scorers = [n for n in names if n not in routers]
    try:
        specs = [replay.RouterSpec.parse(n, pol_params, pred_params) for n in routers]
        for sp in specs:
            replay.sweep_of(sp.policy)
    except ValueError as e:
        print(f"error: unknown policies {routers}: {e}; two-target scorers: {sorted(SCORERS)}; "
              f"routers are POLICY:PREDICTOR", file=sys.stderr)
        return None
    if not two:
        if scorers:
            print(f"error: {scorers} are two-target scorers; with {len(table.targets)} targets give "
                  "routers as POLICY:PREDICTOR (e.g. cheapest-fit:knn)", file=sys.stderr)
            return None
        if args.policies is None:
            specs = many.default_specs()
    if table.answers is None and "cascade-weak-answer" in scorers:
        scorers.remove("cascade-weak-answer")  # needs the weak model's answer texts (RouteLLM GSM8K)
        print("skipping cascade-weak-answer: no answer texts in this table", file=sys.stderr)
    need_emb = any(SCORERS[n]().needs_embeddings for n in scorers) or any(s.kind != "prior" for s in specs)
    emb = embeddings_for(table, args.encoder, not args.no_cache) if need_emb else None
    progress = not args.quiet
    if two:
        report = evaluate.evaluate(table, protocol, scorers, emb, seed=args.seed, progress=progress)
        if specs:
            extra = many.evaluate_many(table, protocol, specs, emb, args.seed, progress=progress,
                                       encoder=args.encoder)
            report["policies"] += [_two_target_figures(p, report) for p in extra["policies"]
                                   if p["name"] not in ("oracle", "random")]
    else:
        report = many.evaluate_many(table, protocol, specs, emb, args.seed, progress=progress,
                                    encoder=args.encoder)
    report["encoder"] = args.encoder if need_emb else None
    return report


def _two_target_figures(row: dict, report: dict) -> dict:
    """RouteLLM's figures for a replayed router on two targets: its points by dearer-call share."""
    from policies.tuning import metrics

    share = np.array(row["curve"]["shares"][report["dearer"]])
    order = np.argsort(share, kind="stable")
    curve = metrics.Curve(share=share[order], quality=np.array(row["curve"]["quality"])[order],
                          cost=np.array(row["curve"]["cost_usd"])[order], threshold=np.zeros(len(share)))
    lo, hi = sorted(t["cost_usd"] for t in report["targets"])
    row.update(metrics.summarize(curve, report["weak_quality"], report["strong_quality"], (lo, hi)))
    row["aiq"] = metrics.aiq(curve, (lo, hi))
    row["operating_points"] = []
    row["curve"]["share"] = share.tolist()  # calls to the dearer target, as RouteLLM's x-axis
    return row


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="replay routers offline; cost-quality curves, AIQ, cost to match the best",
                       description="Replay routers offline over a dataset table (K-fold CV, a "
                                   "leave-one-dataset-out holdout, or --train/--test). Two targets: "
                                   "RouteLLM's APGR/CPT plus the many-target figures; more targets: the real "
                                   "policies and predictors over all of them, beside every single target, "
                                   "random and the oracle.")
    _add_data_args(p, split=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cv", type=int, default=5, help="K-fold cross-validation within the dataset")
    g.add_argument("--holdout", default=None,
                   help="train on the other datasets in --data, test on this one")
    p.add_argument("--policies", default=None,
                   help="comma list. Two targets: scorers (default: DEFAULT_SCORERS of "
                        "policies/tuning/scorers.py). Any number: routers POLICY:PREDICTOR replaying the "
                        "registered policy over a policies.predictors kind, e.g. cheapest-fit:knn "
                        "(default with >2 targets: every policy with a knob x every predictor kind)")
    p.add_argument("--policy-params", default=None,
                   help='JSON {policy: {config field: value}} applied to that policy\'s config')
    p.add_argument("--predictor-params", default=None,
                   help='JSON {kind: {param: value}} passed to that predictor\'s constructor')
    p.add_argument("--encoder", default="minilm", choices=encoder_names(),
                   help="prompt embedding for the learned predictors (cached under $ROUTER_CACHE_DIR)")
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
    p.add_argument("--kind", default="logistic", choices=_kinds(),
                   help="policies.predictors class to fit (every kind serving can load)")
    p.add_argument("--encoder", default="minilm", choices=["minilm", "static", "hash"],
                   help="featurizer; recorded in the artifact, serving embeds with the same one "
                        "(hash: tests only, serving does not build it)")
    p.add_argument("--k", type=int, default=None, help="neighbours (knn; default: the class default)")
    p.add_argument("--params", default=None, help="JSON object of predictor constructor parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("train", "cmd_train"))


def _knob_policies() -> list[str]:
    import policies.config  # noqa: F401
    from policies.registry import registered
    from policies.tuning.replay import sweep_of

    return sorted(n for n in registered() if sweep_of(n)[0] is not None)


def _calibrate_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="choose a policy's knob for a budget, quality floor or call share",
                       description="Choose a policy's knob (cheapest-fit's min_quality, quality-threshold's "
                                   "threshold, utility's cost_weight) for a goal by replaying the real policy "
                                   "and predictor on held-out rows (K-fold over --data, or --train/--test); "
                                   "print the cluster.yaml snippet and what the replay measured there.")
    _add_data_args(p, split=True)
    p.add_argument("--cv", type=int, default=5, help="folds over --data for out-of-fold predictions")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget-per-1k", type=float, help="USD per 1k requests to stay under (best quality)")
    g.add_argument("--quality-floor", type=float, help="mean quality to reach (cheapest setting)")
    g.add_argument("--share", default=None, help="TARGET=FRACTION: share of calls to that target")
    g.add_argument("--strong-share", type=float, help="share of calls to the best target (two-target use)")
    g.add_argument("--min-pgr", type=float, help="cheapest setting reaching this PGR (0-1)")
    p.add_argument("--policy", default="quality-threshold", choices=_knob_policies())
    p.add_argument("--score", default="weak-quality", choices=["weak-quality", "win-rate"],
                   help="quality-threshold's score (see policies/baselines.py)")
    p.add_argument("--kind", default="logistic", choices=_kinds(),
                   help="policies.predictors kind serving will load")
    p.add_argument("--artifact", default="PATH/TO/ARTIFACT", help="artifact dir to name in the snippet")
    p.add_argument("--save-artifact", default=None,
                   help="fit the predictor (train side of --train/--test, else all of --data) and save it "
                        "here; the snippet names it")
    p.add_argument("--on-unsatisfiable", default=None, choices=["reject", "best_effort"],
                   help="override the replayed policy's setting (default best_effort where it has one)")
    p.add_argument("--policy-params", default=None, help="JSON {config field: value} for the policy")
    p.add_argument("--predictor-params", default=None, help="JSON {param: value} for the predictor")
    p.add_argument("--encoder", default="minilm", choices=encoder_names())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    sub = tune.add_subparsers(dest="tune_command", metavar="{collect,train,eval,calibrate,simulate,featurizer}")
    sub.required = True
    from policies.tuning.featurizer import add_parser as _featurizer_parser  # `tune featurizer build`

    for add in (_collect_parser, _train_parser, _eval_parser, _calibrate_parser, _simulate_parser,
                _featurizer_parser):
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
