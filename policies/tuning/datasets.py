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
        )

    def costs(self, prices: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
        """(n, T) USD per request: measured cost if present, else tokens x price table."""
        if self.cost_usd is not None:
            return self.cost_usd
        prices = prices or ROUTELLM_PRICES
        t_in = self.tokens_in if self.tokens_in is not None else np.array(
            [estimate_tokens(p) for p in self.prompts], dtype=float
        )
        t_out = self.tokens_out
        if t_out is None:
            t_out = np.full((len(self), len(self.targets)), float(DEFAULT_OUTPUT_TOKENS))
        out = np.zeros((len(self), len(self.targets)))
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


# --- collected data and user files ----------------------------------------------------------------

_PER_TARGET = ("tokens_out", "ttft_ms", "e2e_ms", "cost_usd")


def from_records(records: Iterable[dict], targets: Sequence[str] | None = None) -> RouteTable:
    """Pivot long records (one per prompt x target, as `tune collect` writes) into a table.

    Each record: prompt, target, quality (or correct), optional dataset, group, prompt_tokens,
    completion_tokens, ttft_ms, e2e_ms, cost_usd. Prompts not answered by every target are dropped.
    """
    by_prompt: dict[tuple[str, str], dict[str, dict]] = {}
    seen_targets: list[str] = []
    for r in records:
        if r.get("error"):
            continue
        t = str(r["target"])
        if t not in seen_targets:
            seen_targets.append(t)
        key = (str(r.get("dataset", "user")), str(r["prompt"]))
        by_prompt.setdefault(key, {})[t] = r
    tg = list(targets) if targets else sorted(seen_targets)  # write order varies with concurrency
    rows = sorted(((k, v) for k, v in by_prompt.items() if all(t in v for t in tg)), key=lambda kv: kv[0])

    def grid(key: str) -> np.ndarray | None:
        vals = [[v[t].get(key) for t in tg] for _, v in rows]
        if not rows or any(x is None for row in vals for x in row):
            return None
        return np.array(vals, dtype=float)

    q = [[float(v[t].get("quality", v[t].get("correct", 0.0))) for t in tg] for _, v in rows]
    first = [v[tg[0]] for _, v in rows]
    tin = [r.get("prompt_tokens") for r in first]
    return RouteTable(
        prompts=[k[1] for k, _ in rows],
        targets=tg,
        quality=np.array(q, dtype=float).reshape(len(rows), len(tg)),
        dataset=np.array([k[0] for k, _ in rows], dtype=object),
        group=np.array([str(r.get("group", "")) for r in first], dtype=object),
        tokens_in=None if any(x is None for x in tin) else np.array(tin, dtype=float),
        tokens_out=grid("completion_tokens"),
        ttft_ms=grid("ttft_ms"),
        e2e_ms=grid("e2e_ms"),
        cost_usd=grid("cost_usd"),
    )


def from_wide(rows: Sequence[dict], targets: Sequence[str] | None = None) -> RouteTable:
    """Wide rows: prompt, optional dataset/group/tokens_in, and per target `quality.<id>` (or a bare
    `<id>` column), optional `tokens_out.<id>`, `ttft_ms.<id>`, `e2e_ms.<id>`, `cost_usd.<id>`."""
    if not rows:
        raise ValueError("no rows")
    fixed = {"prompt", "dataset", "group", "tokens_in"}
    keys = list(rows[0].keys())
    if targets is None:
        targets = [k.split(".", 1)[1] for k in keys if k.startswith("quality.")] or [
            k for k in keys if k not in fixed and "." not in k
        ]
    tg = list(targets)

    def qcol(t: str) -> str:
        return f"quality.{t}" if f"quality.{t}" in rows[0] else t

    def val(x: object) -> float:
        return _truth(x) if isinstance(x, str) and x.strip().lower() in ("true", "false") else float(str(x))

    extra: dict[str, np.ndarray | None] = {}
    for name in _PER_TARGET:
        cols = [f"{name}.{t}" for t in tg]
        ok = all(c in rows[0] and all(r.get(c) not in (None, "") for r in rows) for c in cols)
        extra[name] = np.array([[float(r[c]) for c in cols] for r in rows]) if ok else None
    tin_ok = all(r.get("tokens_in") not in (None, "") for r in rows)
    return RouteTable(
        prompts=[str(r["prompt"]) for r in rows],
        targets=tg,
        quality=np.array([[val(r[qcol(t)]) for t in tg] for r in rows], dtype=float),
        dataset=np.array([str(r.get("dataset") or "user") for r in rows], dtype=object),
        group=np.array([str(r.get("group") or "") for r in rows], dtype=object),
        tokens_in=np.array([float(r["tokens_in"]) for r in rows]) if tin_ok else None,
        **extra,
    )


def load_file(path: str | Path, targets: Sequence[str] | None = None) -> RouteTable:
    """A user CSV/JSONL (wide) or a collected JSONL (long: records with a `target` field)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return from_wide(list(csv.DictReader(fh)), targets)
    with path.open() as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    if recs and "target" in recs[0]:
        return from_records(recs, targets)
    return from_wide(recs, targets)


def load(data: str | Path, dataset: str | None = None, **kw: object) -> RouteTable:
    """Resolve --data/--dataset: a RouteLLM folder plus a benchmark name (or `all`), or a file."""
    p = Path(data)
    if p.is_dir():
        names = ROUTELLM_DATASETS if dataset in (None, "all") else (dataset,)
        return concat(load_routellm(p, n, **kw) for n in names)  # type: ignore[arg-type]
    table = load_file(p)
    if dataset not in (None, "all"):
        table = table.subset(table.dataset == dataset)
    return table
