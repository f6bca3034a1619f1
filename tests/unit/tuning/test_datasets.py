"""Loaders: RouteLLM files (row counts from its README), collected JSONL, user CSV/JSONL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.tuning import datasets as d


def test_mmlu_counts_and_contamination(routellm):
    raw = d.load_routellm(routellm, "mmlu", drop_contaminated=False)
    assert len(raw) == 14042
    assert len(set(raw.group)) == 57
    clean = d.load_routellm(routellm, "mmlu")
    bad = sum(1 for _ in (routellm / "mmlu" / "contaminated_prompts.jsonl").open())
    assert len(raw) - bad <= len(clean) < len(raw)
    assert clean.strong == d.ROUTELLM_STRONG and clean.weak == d.ROUTELLM_WEAK
    # README: accuracy 0.681 (weak) and 0.806 (strong)
    assert clean.quality[:, clean.col(d.ROUTELLM_WEAK)].mean() == pytest.approx(0.681, abs=0.002)
    assert clean.quality[:, clean.col(d.ROUTELLM_STRONG)].mean() == pytest.approx(0.806, abs=0.002)


def test_gsm8k_counts_and_tokens(routellm):
    assert len(d.load_routellm(routellm, "gsm8k", drop_contaminated=False)) == 1319
    t = d.load_routellm(routellm, "gsm8k")
    assert 1300 <= len(t) < 1319
    assert t.tokens_out is not None and np.median(t.tokens_out) > 50
    assert t.costs().shape == (len(t), 2) and (t.costs()[:, 0] > t.costs()[:, 1]).all()


def test_mt_bench_score_over_ten_and_threshold(routellm):
    t = d.load_routellm(routellm, "mt_bench", drop_contaminated=False)
    assert len(t) == 80 and t.quality.max() <= 1.0 and t.quality.min() >= 0.1
    clean = d.load_routellm(routellm, "mt_bench")
    assert len(clean) < 80
    binary = d.load_routellm(routellm, "mt_bench", mt_bench_threshold=8)
    assert set(np.unique(binary.quality)) <= {0.0, 0.5, 1.0}


def test_concat_and_load_all(routellm):
    t = d.load(routellm, "all")
    assert set(t.dataset) == {"mmlu", "gsm8k", "mt_bench"}
    assert len(t.subset(t.dataset == "gsm8k")) == len(d.load_routellm(routellm, "gsm8k"))


def test_collected_long_jsonl_pivots(tmp_path):
    recs = [
        {"prompt": "1+1?", "target": "a", "correct": 1, "prompt_tokens": 5, "completion_tokens": 3,
         "ttft_ms": 10.0, "e2e_ms": 30.0, "dataset": "arith"},
        {"prompt": "1+1?", "target": "b", "correct": 0, "prompt_tokens": 5, "completion_tokens": 4,
         "ttft_ms": 20.0, "e2e_ms": 60.0, "dataset": "arith"},
        {"prompt": "2+2?", "target": "a", "correct": 1, "prompt_tokens": 5, "completion_tokens": 3,
         "ttft_ms": 11.0, "e2e_ms": 31.0, "dataset": "arith"},  # b missing: row dropped
        {"prompt": "3+3?", "target": "b", "error": "timeout"},
    ]
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    t = d.load_file(p)
    assert t.targets == ["a", "b"] and len(t) == 1
    assert t.quality.tolist() == [[1.0, 0.0]]
    assert t.e2e_ms.tolist() == [[30.0, 60.0]] and t.tokens_in.tolist() == [5.0]


def test_user_csv_wide(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("prompt,group,quality.small,quality.big,cost_usd.small,cost_usd.big\n"
                 "hi,chat,0.5,1,0.001,0.01\nsum 2 3,math,False,True,0.001,0.02\n")
    t = d.load_file(p)
    assert t.targets == ["small", "big"]
    assert t.quality.tolist() == [[0.5, 1.0], [0.0, 1.0]]
    assert t.costs()[1, 1] == pytest.approx(0.02) and t.strong == "big"


def test_mmlu_in_routellm_repo_layout(tmp_path, routellm):
    import shutil

    (tmp_path / "mmlu" / "responses").mkdir(parents=True)
    for name in ("mmlu_anatomy.csv", "mmlu_virology.csv"):
        shutil.copy(routellm / "mmlu" / name, tmp_path / "mmlu" / "responses" / name)
    t = d.load_routellm(tmp_path, "mmlu")
    assert set(t.group) == {"anatomy", "virology"} and len(t) > 100
