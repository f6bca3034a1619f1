"""The common per-prompt table every tuning step reads, and its loaders.

One row per prompt; per-target columns hold quality in [0, 1] (1 = acceptable answer), and where known
the output tokens, latencies and cost. Loaders read RouteLLM's evaluation files from a path the user
gives (they are never copied into this repo), the JSONL that `tune collect` writes, and user CSV/JSONL.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROUTELLM_STRONG = "gpt-4-1106-preview"
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_DATASETS = ("mmlu", "gsm8k", "mt_bench")
# USD per 1M tokens (input, output); the figures RouteLLM's paper prices its pair with.
ROUTELLM_PRICES = {ROUTELLM_STRONG: (10.0, 30.0), ROUTELLM_WEAK: (0.24, 0.24)}
DEFAULT_OUTPUT_TOKENS = 256

csv.field_size_limit(sys.maxsize)


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters a token) for data without a tokenizer's count."""
    return max(1, round(len(text) / 4))


@dataclass
class RouteTable:
    """Per-prompt outcomes of several targets. Arrays are (n,) or (n, len(targets))."""

    prompts: list[str]
    targets: list[str]
    quality: np.ndarray
    dataset: np.ndarray
    group: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    tokens_in: np.ndarray | None = None
    tokens_out: np.ndarray | None = None
    ttft_ms: np.ndarray | None = None
    e2e_ms: np.ndarray | None = None
    cost_usd: np.ndarray | None = None
    answers: np.ndarray | None = None  # (n, T) answer texts where known (cascade replay reads them)
    # List prices (USD per 1M input, output tokens) by target, e.g. from a meta.json beside the file;
    # what the replayed policy plans its expected cost with. None: derived (see `list_prices`).
    prices: dict[str, tuple[float, float]] | None = None
    assumed_output_tokens: int | None = None  # output length the table's cost assumes, if it says

    def __post_init__(self) -> None:
        n = len(self.prompts)
        self.quality = np.asarray(self.quality, dtype=float).reshape(n, len(self.targets))
        self.dataset = np.asarray(self.dataset, dtype=object)
        if len(self.group) == 0 and n:
            self.group = np.full(n, "", dtype=object)
        self.group = np.asarray(self.group, dtype=object)
        if self.dataset.shape != (n,) or self.group.shape != (n,):
            raise ValueError("dataset and group need one value per prompt")

    def __len__(self) -> int:
        return len(self.prompts)

    def col(self, target: str) -> int:
        return self.targets.index(target)

    @property
    def strong(self) -> str:
        """The target with the highest mean quality."""
        return self.targets[int(np.argmax(self.quality.mean(axis=0)))]

    @property
    def weak(self) -> str:
        """The target with the lowest mean quality."""
        return self.targets[int(np.argmin(self.quality.mean(axis=0)))]

    def subset(self, idx: Sequence[int] | np.ndarray) -> RouteTable:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return RouteTable(
            prompts=[self.prompts[i] for i in idx],
            targets=list(self.targets),
            quality=self.quality[idx],
            dataset=self.dataset[idx],
            group=self.group[idx],
            tokens_in=take(self.tokens_in),
            tokens_out=take(self.tokens_out),
            ttft_ms=take(self.ttft_ms),
            e2e_ms=take(self.e2e_ms),
            cost_usd=take(self.cost_usd),
            answers=take(self.answers),
            prices=self.prices,
            assumed_output_tokens=self.assumed_output_tokens,
        )

    def select(self, targets: Sequence[str]) -> RouteTable:
        """The same rows with only these targets (in this order)."""
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            raise ValueError(f"unknown targets {unknown}; the table has {self.targets}")
        cols = [self.col(t) for t in targets]

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, cols]

        return RouteTable(
            prompts=list(self.prompts), targets=list(targets), quality=self.quality[:, cols],
            dataset=self.dataset, group=self.group, tokens_in=self.tokens_in,
            tokens_out=take(self.tokens_out), ttft_ms=take(self.ttft_ms), e2e_ms=take(self.e2e_ms),
            cost_usd=take(self.cost_usd), answers=take(self.answers),
            prices=None if self.prices is None else {t: self.prices[t] for t in targets if t in self.prices},
            assumed_output_tokens=self.assumed_output_tokens,
        )

    def prompt_tokens(self) -> np.ndarray:
        """(n,) input tokens: the table's column, else ~characters / 4."""
        if self.tokens_in is not None:
            return np.asarray(self.tokens_in, dtype=float)
        return np.array([estimate_tokens(p) for p in self.prompts], dtype=float)

    def output_tokens(self) -> int:
        """The output length a policy should plan with on this table: what the table's cost assumes,
        else the mean measured output length, else DEFAULT_OUTPUT_TOKENS."""
        if self.assumed_output_tokens:
            return int(self.assumed_output_tokens)
        if self.tokens_out is not None and len(self):
            return max(1, round(float(np.mean(self.tokens_out))))
        return DEFAULT_OUTPUT_TOKENS

    def list_prices(self, prices: dict[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
        """USD per 1M (input, output) tokens per target, for the policy's expected cost.

        Order of sources: the table's own prices (meta.json), the given price table, and for targets in
        neither, one price per token that reproduces the target's mean cost over the table's tokens
        (so measured costs rank the targets as they do in the data)."""
        out: dict[str, tuple[float, float]] = {}
        table = {**(prices or (ROUTELLM_PRICES if self.cost_usd is None else {})), **(self.prices or {})}
        cost = self.costs(prices)
        tin = self.prompt_tokens()
        for j, t in enumerate(self.targets):
            if t in table:
                out[t] = (float(table[t][0]), float(table[t][1]))
                continue
            tout = self.tokens_out[:, j] if self.tokens_out is not None else np.full(len(self), self.output_tokens())
            tokens = float(np.mean(tin + tout)) if len(self) else 1.0
            per = 1e6 * float(np.mean(cost[:, j])) / max(tokens, 1e-9) if len(self) else 0.0
            out[t] = (per, per)
        return out

    def costs(self, prices: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
        """(n, T) USD per request: measured cost if present, else tokens x price table."""
        if self.cost_usd is not None:
            return self.cost_usd
        prices = {**(prices or ROUTELLM_PRICES), **(self.prices or {})}
        t_in = self.tokens_in if self.tokens_in is not None else np.array(
            [estimate_tokens(p) for p in self.prompts], dtype=float
        )
        t_out = self.tokens_out
        if t_out is None:
            t_out = np.full((len(self), len(self.targets)), float(DEFAULT_OUTPUT_TOKENS))
        out = np.zeros((len(self), len(self.targets)))
        unpriced = [t for t in self.targets if t not in prices]
        if unpriced and not getattr(self, "_warned_unpriced", False):
            # A made-up price decides every routing comparison: say so, once per table.
            warn(f"no cost_usd columns and no list price for {', '.join(unpriced)}: assuming $1 per 1M "
                 "tokens for them (add cost_usd.<id> columns or prices_per_mtok in a meta.json)")
            object.__setattr__(self, "_warned_unpriced", True)
        for j, t in enumerate(self.targets):
            p_in, p_out = prices.get(t, (1.0, 1.0))
            out[:, j] = (t_in * p_in + t_out[:, j] * p_out) / 1e6
        return out


def concat(tables: Iterable[RouteTable]) -> RouteTable:
    """Stack tables with the same targets (e.g. the RouteLLM datasets for a holdout split)."""
    tables = list(tables)
    targets = tables[0].targets
    if any(t.targets != targets for t in tables):
        raise ValueError("tables must have the same targets in the same order")

    def cat(name: str) -> np.ndarray | None:
        arrs = [getattr(t, name) for t in tables]
        return None if any(a is None for a in arrs) else np.concatenate(arrs)

    return RouteTable(
        prompts=[p for t in tables for p in t.prompts],
        targets=list(targets),
        quality=np.concatenate([t.quality for t in tables]),
        dataset=np.concatenate([t.dataset for t in tables]),
        group=np.concatenate([t.group for t in tables]),
        tokens_in=cat("tokens_in"),
        tokens_out=cat("tokens_out"),
        ttft_ms=cat("ttft_ms"),
        e2e_ms=cat("e2e_ms"),
        cost_usd=cat("cost_usd"),
        answers=cat("answers"),
        prices=tables[0].prices,
        assumed_output_tokens=tables[0].assumed_output_tokens,
    )


# --- RouteLLM ---------------------------------------------------------------------------------------


def _contaminated(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}


def _truth(v: str) -> float:
    return 1.0 if v.strip().lower() in ("true", "1", "1.0") else 0.0


def load_routellm(root: str | Path, name: str, *, drop_contaminated: bool = True,
                  mt_bench_threshold: float | None = None) -> RouteTable:
    """One RouteLLM benchmark: `mmlu`, `gsm8k` or `mt_bench` (targets: strong, weak)."""
    root = Path(root)
    loaders: dict[str, Callable[..., RouteTable]] = {
        "mmlu": _load_mmlu, "gsm8k": _load_gsm8k, "mt_bench": _load_mt_bench}
    if name not in loaders:
        raise ValueError(f"unknown RouteLLM dataset {name!r}; choose from {ROUTELLM_DATASETS}")
    if not (root / name).is_dir():
        raise FileNotFoundError(f"{root / name} not found: pass --data the RouteLLM evals folder")
    if name == "mt_bench":
        return _load_mt_bench(root, drop_contaminated, mt_bench_threshold)
    return loaders[name](root, drop_contaminated)


def _load_mmlu(root: Path, drop: bool) -> RouteTable:
    bad = _contaminated(root / "mmlu" / "contaminated_prompts.jsonl") if drop else set()
    prompts, qual, group = [], [], []
    # RouteLLM's repo keeps the csvs in mmlu/responses/; the shared copy flattened them into mmlu/
    files = sorted((root / "mmlu").glob("mmlu_*.csv"))
    files = files or sorted((root / "mmlu" / "responses").glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"no mmlu_<subject>.csv under {root / 'mmlu'}")
    for f in files:
        subject = f.stem[len("mmlu_"):]  # the file name is the subject: a legit routing feature
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["prompt"] in bad:
                    continue
                prompts.append(row["prompt"])
                qual.append((_truth(row[ROUTELLM_STRONG]), _truth(row[ROUTELLM_WEAK])))
                group.append(subject)
    return RouteTable(
        prompts=prompts,
        targets=[ROUTELLM_STRONG, ROUTELLM_WEAK],
        quality=np.array(qual),
        dataset=np.full(len(prompts), "mmlu", dtype=object),
        group=np.array(group, dtype=object),
        tokens_in=np.array([estimate_tokens(p) for p in prompts], dtype=float),
        tokens_out=np.full((len(prompts), 2), 1.0),  # MMLU answers are one letter
    )


def _load_gsm8k(root: Path, drop: bool) -> RouteTable:
    bad = _contaminated(root / "gsm8k" / "contaminated_prompts.jsonl") if drop else set()
    prompts, qual, tout, answers = [], [], [], []
    with (root / "gsm8k" / "gsm8k_responses.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["prompt"] in bad:
                continue
            prompts.append(row["prompt"])
            qual.append((_truth(row[ROUTELLM_STRONG]), _truth(row[ROUTELLM_WEAK])))
            texts = [row.get(f"{m}_response", "") or "" for m in (ROUTELLM_STRONG, ROUTELLM_WEAK)]
            tout.append([estimate_tokens(t or "x") for t in texts])
            answers.append(texts)
    return RouteTable(
        prompts=prompts,
        targets=[ROUTELLM_STRONG, ROUTELLM_WEAK],
        quality=np.array(qual),
        dataset=np.full(len(prompts), "gsm8k", dtype=object),
        tokens_in=np.array([estimate_tokens(p) for p in prompts], dtype=float),
        tokens_out=np.array(tout, dtype=float),
        answers=np.array(answers, dtype=object).reshape(len(prompts), 2),
    )


def _load_mt_bench(root: Path, drop: bool, threshold: float | None) -> RouteTable:
    """Routed on the first turn; quality = the routed model's mean judge score over both turns / 10.

    That mean is exactly what RouteLLM averages, so APGR and CPT are unchanged by the rescaling. With a
    threshold, quality = 1 when each turn's score is >= threshold (a pass/fail view), averaged.
    """
    bad = _contaminated(root / "mt_bench" / "contaminated_prompts.jsonl") if drop else set()
    scores: dict[tuple[int, str], list[float]] = {}
    with (root / "mt_bench" / "judgements.jsonl").open() as fh:
        for line in fh:
            j = json.loads(line)
            s = float(j["score"])
            val = (1.0 if s >= threshold else 0.0) if threshold is not None else s / 10.0
            scores.setdefault((j["question_id"], j["model"]), []).append(val)
    prompts, qual, group = [], [], []
    with (root / "mt_bench" / "question.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            turns = q["turns"]
            if bad & set(turns):
                continue
            qid = q["question_id"]
            prompts.append(turns[0])
            qual.append([float(np.mean(scores[(qid, m)])) for m in (ROUTELLM_STRONG, ROUTELLM_WEAK)])
            group.append(q.get("category", ""))
    return RouteTable(
        prompts=prompts,
        targets=[ROUTELLM_STRONG, ROUTELLM_WEAK],
        quality=np.array(qual),
        dataset=np.full(len(prompts), "mt_bench", dtype=object),
        group=np.array(group, dtype=object),
        tokens_in=np.array([estimate_tokens(p) for p in prompts], dtype=float),
    )


def warn(msg: str) -> None:
    """Loader warnings go to stderr: stdout carries the one JSON object of --json."""
    sys.stderr.write(f"warning: {msg}\n")


# --- collected data and user files (policies/tuning/tables.py) ------------------------------------


def from_records(records: Iterable[dict], targets: Sequence[str] | None = None, **kw: Any) -> RouteTable:
    from policies.tuning.tables import from_records as f

    return f(records, targets, **kw)


def from_wide(rows: Sequence[dict], targets: Sequence[str] | None = None, **kw: Any) -> RouteTable:
    from policies.tuning.tables import from_wide as f

    return f(rows, targets, **kw)


def load_file(path: str | Path, targets: Sequence[str] | None = None, **kw: Any) -> RouteTable:
    from policies.tuning.tables import load_file as f

    return f(path, targets, **kw)


def load(data: str | Path, dataset: str | None = None, **kw: object) -> RouteTable:
    """Resolve --data/--dataset: a RouteLLM folder plus a benchmark name (or `all`), a folder with a
    train.csv and a meta.json (e.g. llmrouter-dc: its train part), or a file."""
    p = Path(data)
    fill = bool(kw.pop("fill_missing_cost", False))
    if p.is_dir() and (p / "train.csv").is_file() and not (p / "mmlu").is_dir():
        p = p / "train.csv"
    if p.is_dir():
        names = ROUTELLM_DATASETS if dataset in (None, "all") else (dataset,)
        return concat(load_routellm(p, n, **kw) for n in names)  # type: ignore[arg-type]
    table = load_file(p, fill_missing_cost=fill)
    if dataset not in (None, "all"):
        table = table.subset(table.dataset == dataset)
        if not len(table):
            raise ValueError(f"{p}: no rows of dataset {dataset!r}")
    return table
