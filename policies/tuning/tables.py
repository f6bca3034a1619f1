"""User tables and collected data: the wide CSV/JSONL loader with its input checks, and the pivot of
the long JSONL `tune collect` writes. `datasets` re-exports these (`datasets.load_file` etc.).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from policies.tuning.datasets import RouteTable, warn

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
        tokens_out=extra["tokens_out"],
        ttft_ms=extra["ttft_ms"],
        e2e_ms=extra["e2e_ms"],
        cost_usd=extra["cost_usd"],
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


