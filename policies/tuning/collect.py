"""`tune collect`: run a gold-answer benchmark through every target of a running cluster.

Each prompt goes to each target pinned by id (`model: <target id>` on POST /v1/chat/completions),
streamed with `stream_options.include_usage` so one request gives TTFT (first content chunk), end-to-end
latency and the real token counts. Answers are scored against the gold answer: numeric match for
GSM8K-style problems, letter match for multiple choice. Records are appended to a JSONL file as they
finish, so an interrupted run resumes where it stopped (done (prompt, target) pairs are skipped); the
file loads as the common table with `datasets.load_file`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

GSM8K_INSTRUCTION = "Solve the problem step by step. End with a line '#### <number>'.\n\n"
MC_INSTRUCTION = "Answer with the letter of the correct choice.\n\n"
_NUM = r"-?\d[\d,]*(?:\.\d+)?"


def _to_float(s: str) -> float | None:
    try:
        return float(s.replace(",", "").rstrip("."))
    except ValueError:
        return None


def extract_number(text: str) -> float | None:
    """The final numeric answer: after '####', else after 'answer is', else the last number."""
    for pat in (rf"####\s*\$?\s*({_NUM})", rf"answer is[:\s]*\$?\s*({_NUM})", rf"\\boxed\{{\s*({_NUM})"):
        m = re.findall(pat, text, flags=re.IGNORECASE)
        if m:
            return _to_float(m[-1])
    nums = re.findall(_NUM, text)
    return _to_float(nums[-1]) if nums else None


def extract_letter(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The chosen option letter: 'answer is (B)', a leading 'B.' or 'B)', else the last lone letter."""
    m = re.search(rf"answer(?: is)?[:\s]*\(?([{letters}])\b", text, flags=re.IGNORECASE)
    if m:
        return m.group(1).upper()
    m = re.match(rf"\s*\(?([{letters}])[\).:\s]", text + " ")
    if m:
        return m.group(1)
    lone = re.findall(rf"\b([{letters}])\b", text)
    return lone[-1] if lone else None


def is_correct(answer: str, gold: str, kind: str) -> bool:
    if kind == "choice":
        return extract_letter(answer) == gold.strip().upper()[:1]
    g = extract_number(gold)
    a = extract_number(answer)
    return g is not None and a is not None and abs(a - g) <= 1e-6 * max(1.0, abs(g))


def load_bench(bench: str, data: str | None, limit: int | None) -> list[dict]:
    """Items {prompt, message, gold, kind, dataset}: `gsm8k` from the RouteLLM folder's test.jsonl, or a
    user JSONL with prompt + answer (+ optional choices list -> multiple choice)."""
    items = []
    if bench == "gsm8k":
        if not data:
            raise SystemExit("--bench gsm8k needs --data (the RouteLLM folder with gsm8k/test.jsonl)")
        with (Path(data) / "gsm8k" / "test.jsonl").open() as f:
            for line in f:
                r = json.loads(line)
                items.append({"prompt": r["question"], "message": GSM8K_INSTRUCTION + r["question"],
                              "gold": r["answer"].split("####")[-1].strip(), "kind": "number",
                              "dataset": "gsm8k"})
    else:
        name = Path(bench).stem
        with Path(bench).open() as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                choices = r.get("choices")
                if choices:
                    opts = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
                    msg = f"{MC_INSTRUCTION}{r['prompt']}\n{opts}"
                    kind = "choice"
                else:
                    msg, kind = r.get("message", r["prompt"]), r.get("kind", "number")
                items.append({"prompt": r["prompt"], "message": msg, "gold": str(r["answer"]),
                              "kind": kind, "dataset": r.get("dataset", name)})
    return items[:limit] if limit else items


async def list_targets(client: httpx.AsyncClient) -> list[str]:
    r = await client.get("/v1/models")
    r.raise_for_status()
    return [m["id"] for m in r.json().get("data", []) if m.get("id") != "auto"]


async def ask(client: httpx.AsyncClient, target: str, message: str, max_tokens: int) -> dict:
    """One streamed chat completion pinned to `target`: text, usage, TTFT and e2e in ms."""
    body = {"model": target, "messages": [{"role": "user", "content": message}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0.0}
    t0 = time.perf_counter()
    ttft = None
    parts: list[str] = []
    usage: dict = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise httpx.HTTPStatusError(f"{r.status_code}: {r.text[:200]}", request=r.request, response=r)
        routed = r.headers.get("x-router-target")
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for ch in chunk.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") or ""
                if piece:
                    if ttft is None:
                        ttft = (time.perf_counter() - t0) * 1000
                    parts.append(piece)
            if chunk.get("usage"):
                usage = chunk["usage"]
    e2e = (time.perf_counter() - t0) * 1000
    return {"answer": "".join(parts), "ttft_ms": ttft if ttft is not None else e2e, "e2e_ms": e2e,
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
            "routed_target": routed}


def done_pairs(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    out = set()
    with path.open() as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run; that pair is simply asked again
            if not r.get("error"):
                out.add((r["prompt"], r["target"]))
    return out


async def collect(base_url: str, items: Sequence[dict], out: Path, targets: Sequence[str] | None = None,
                  max_tokens: int = 512, concurrency: int = 2, timeout: float = 300.0,
                  api_key: str | None = None, progress: bool = True,
                  transport: httpx.AsyncBaseTransport | None = None) -> dict:
    """Ask every target every item not yet in `out`; append one record per answer; return a summary."""
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers,
                                 transport=transport) as client:
        tg = list(targets) if targets else await list_targets(client)
        if not tg:
            raise RuntimeError(f"no targets at {base_url}/v1/models")
        done = done_pairs(out)
        todo = [(it, t) for it in items for t in tg if (it["prompt"], t) not in done]
        out.parent.mkdir(parents=True, exist_ok=True)
        sem = asyncio.Semaphore(concurrency)
        stats = {"asked": 0, "errors": 0, "skipped": len(items) * len(tg) - len(todo)}
        bar = tqdm(total=len(todo), desc="collecting", file=sys.stderr, disable=not progress)
        with out.open("a") as fh:

            async def one(it: dict, target: str) -> None:
                async with sem:
                    rec = {"prompt": it["prompt"], "dataset": it["dataset"], "target": target,
                           "gold": it["gold"]}
                    try:
                        res = await ask(client, target, it["message"], max_tokens)
                        ok = is_correct(res["answer"], it["gold"], it["kind"])
                        rec.update(res, correct=ok, quality=1.0 if ok else 0.0)
                    except (httpx.HTTPError, json.JSONDecodeError) as e:
                        rec["error"] = f"{type(e).__name__}: {e}"[:300]
                        stats["errors"] += 1
                    stats["asked"] += 1
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    bar.update(1)

            await asyncio.gather(*(one(it, t) for it, t in todo))
        bar.close()
    return {"out": str(out), "targets": tg, "items": len(items), **stats}


def cmd_collect(args: argparse.Namespace) -> int:
    from policies.tuning.cli import _emit
    from policies.tuning.datasets import load_file

    items = load_bench(args.bench, args.data, args.limit)
    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    out = Path(args.out)
    summary = asyncio.run(collect(args.base_url, items, out, targets, args.max_tokens, args.concurrency,
                                  args.timeout, args.api_key or os.environ.get("ROUTER_API_KEY")))
    table = load_file(out)
    summary["table_rows"] = len(table)
    summary["quality"] = dict(zip(table.targets, table.quality.mean(0).round(4).tolist(), strict=True)) \
        if len(table) else {}
    _emit(args, summary, f"{summary['asked']} answers ({summary['errors']} errors, {summary['skipped']} "
                         f"already done) -> {out}; table: {len(table)} prompts answered by every target, "
                         f"mean quality {summary['quality']}")
    return 0
