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


# --- collected data and user files ----------------------------------------------------------------

_PER_TARGET = ("tokens_out", "ttft_ms", "e2e_ms", "cost_usd")


def from_records(records: Iterable[dict], targets: Sequence[str] | None = None, *, source: str = "records",
                 lines: Sequence[int] | None = None) -> RouteTable:
    """Pivot long records (one per prompt x target, as `tune collect` writes) into a table.

    Each record: prompt, target, quality (or correct), optional dataset, group, prompt_tokens,
    completion_tokens, ttft_ms, e2e_ms, cost_usd. Prompts not answered by every target are dropped.
    """
    from policies.tuning import checks

    by_prompt: dict[tuple[str, str], dict[str, dict]] = {}
    seen_targets: list[str] = []
    for i, r in enumerate(records):
        if r.get("error"):
            continue
        checks.prompt(r.get("prompt"), source, i, lines)
        if "target" not in r:
            raise checks.TableError(f"{checks.where(source, i, lines, 'target')}: missing target")
        col = "quality" if "quality" in r else "correct"
        r = {**r, "quality": checks.number(r.get(col), source, i, lines, col, lo=0.0, hi=1.0, booleans=True)}
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

    q = [[float(v[t]["quality"]) for t in tg] for _, v in rows]
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


def from_wide(rows: Sequence[dict], targets: Sequence[str] | None = None, *, source: str = "table",
              lines: Sequence[int] | None = None, fill_missing_cost: bool = False) -> RouteTable:
    """Wide rows: prompt, optional dataset/group/tokens_in, and per target `quality.<id>` (or a bare
    `<id>` column), optional `tokens_out.<id>`, `ttft_ms.<id>`, `e2e_ms.<id>`, `cost_usd.<id>`.

    Checked before anything else runs (TableError naming source, row and column): quality must be a
    number in [0, 1] or True/False, prompts present and unique within a dataset, and a per-target
    column (cost, tokens, latency) either complete for every target or absent. A partly filled cost
    column is an error unless `fill_missing_cost`, which prices each empty cell from tokens x the
    target's list price and says how many it filled."""
    from policies.tuning import checks

    if not rows:
        raise checks.TableError(f"{source}: no rows")
    fixed = {"prompt", "dataset", "group", "tokens_in"}
    keys = list(rows[0].keys())
    if "prompt" not in keys:
        raise checks.TableError(f"{source}: no `prompt` column (columns: {', '.join(keys[:12])})")
    if targets is None:
        targets = [k.split(".", 1)[1] for k in keys if k.startswith("quality.")] or [
            k for k in keys if k not in fixed and "." not in k
        ]
    tg = list(targets)
    if not tg:
        raise checks.TableError(f"{source}: no target columns (`quality.<target id>`)")

    def qcol(t: str) -> str:
        return f"quality.{t}" if f"quality.{t}" in rows[0] else t

    for t in tg:
        if qcol(t) not in rows[0]:
            raise checks.TableError(f"{source}: no column quality.{t}")
    prompts = [checks.prompt(r.get("prompt"), source, i, lines) for i, r in enumerate(rows)]
    dataset = [str(r.get("dataset") or "user") for r in rows]
    checks.no_duplicates(prompts, dataset, source, lines)
    quality = np.array([[checks.number(r.get(qcol(t)), source, i, lines, qcol(t), lo=0.0, hi=1.0,
                                       booleans=True) for t in tg] for i, r in enumerate(rows)])
    extra: dict[str, np.ndarray | None] = {}
    missing_cost: list[tuple[int, int]] = []
    for name in _PER_TARGET:
        cols = [f"{name}.{t}" for t in tg]
        present = [c for c in cols if c in rows[0]]
        if not present:
            extra[name] = None
            continue
        if len(present) < len(cols):
            lack = [c for c in cols if c not in rows[0]]
            raise checks.TableError(f"{source}: {name} given for some targets only (no column "
                                    f"{', '.join(lack)}); give it for every target or for none")
        grid = np.empty((len(rows), len(tg)))
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if name == "cost_usd" and fill_missing_cost and r.get(c) in (None, ""):
                    grid[i, j] = np.nan
                    missing_cost.append((i, j))
                    continue
                grid[i, j] = checks.number(r.get(c), source, i, lines, c, lo=0.0)
        extra[name] = grid
    tin = None
    if "tokens_in" in rows[0]:
        tin = np.array([checks.number(r.get("tokens_in"), source, i, lines, "tokens_in", lo=0.0)
                        for i, r in enumerate(rows)])
    table = RouteTable(
        prompts=prompts,
        targets=tg,
        quality=quality,
        dataset=np.array(dataset, dtype=object),
        group=np.array([str(r.get("group") or "") for r in rows], dtype=object),
        tokens_in=tin,
        **extra,
    )
    if missing_cost:
        _fill_cost(table, missing_cost, source)
    return table


def _fill_cost(table: RouteTable, cells: list[tuple[int, int]], source: str) -> None:
    """Price the empty cost cells only (tokens x list price); the measured cells stay as they are."""
    assert table.cost_usd is not None
    measured, table.cost_usd = table.cost_usd, None
    priced = table.costs()  # tokens x prices, for every cell
    table.cost_usd = measured
    for i, j in cells:
        table.cost_usd[i, j] = priced[i, j]
    cols = sorted({table.targets[j] for _, j in cells})
    warn(f"{source}: {len(cells)} empty cost_usd cells (targets {', '.join(cols)}) priced as tokens x "
         f"list price; the other {table.cost_usd.size - len(cells)} cells are the file's")


def warn(msg: str) -> None:
    """Loader warnings go to stderr: stdout carries the one JSON object of --json."""
    sys.stderr.write(f"warning: {msg}\n")


def _meta_beside(path: Path) -> dict:
    meta = path.parent / "meta.json"
    if not meta.is_file():
        return {}
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        from policies.tuning.checks import TableError

        raise TableError(f"{meta}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_file(path: str | Path, targets: Sequence[str] | None = None, *,
              fill_missing_cost: bool = False) -> RouteTable:
    """A user CSV/JSONL (wide) or a collected JSONL (long: records with a `target` field).

    A `meta.json` beside the file (as in ../shared/datasets/llmrouter-dc) may give the targets' list
    prices (`prices_per_mtok`: {id: [input, output]} USD per 1M tokens) and the output length its costs
    assume (`assumed_output_tokens`); the replayed policies plan their expected cost with them."""
    from policies.tuning import checks

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows, lines = [], []
            for r in reader:
                rows.append(r)
                lines.append(reader.line_num)
        table = from_wide(rows, targets, source=str(path), lines=lines, fill_missing_cost=fill_missing_cost)
    else:
        recs, lines = [], []
        with path.open() as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    raise checks.TableError(f"{path} line {n}: not a JSON object") from None
                lines.append(n)
        if recs and "target" in recs[0]:
            table = from_records(recs, targets, source=str(path), lines=lines)
        else:
            table = from_wide(recs, targets, source=str(path), lines=lines,
                              fill_missing_cost=fill_missing_cost)
    meta = _meta_beside(path)
    prices = meta.get("prices_per_mtok")
    if isinstance(prices, dict):
        table.prices = {str(t): (float(v[0]), float(v[1])) for t, v in prices.items() if t in table.targets}
    if isinstance(meta.get("assumed_output_tokens"), int | float):
        table.assumed_output_tokens = int(meta["assumed_output_tokens"])
    return table


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
