"""The table loader rejects bad cells before any work starts, naming file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policies.tuning import cli, datasets
from policies.tuning.checks import TableError

HEAD = "prompt,quality.a,quality.b,cost_usd.a,cost_usd.b\n"
GOOD = ["p1,1,0,0.01,0.001", "p2,0,1,0.01,0.001", "p3,1,1,0.01,0.001"]

ROOT = Path(__file__).resolve().parents[3]
LLMROUTER = ROOT.parent / "shared" / "datasets" / "llmrouter-dc"


def _csv(tmp_path, rows, head=HEAD, name="t.csv"):
    p = tmp_path / name
    p.write_text(head + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize("bad_row, column, words", [
    ("p2,1.5,1,0.01,0.001", "quality.a", "outside [0, 1]"),
    ("p2,-0.1,1,0.01,0.001", "quality.a", "outside [0, 1]"),
    ("p2,,1,0.01,0.001", "quality.a", "empty cell"),
    ("p2,abc,1,0.01,0.001", "quality.a", "not a number"),
    ("p2,nan,1,0.01,0.001", "quality.a", "not a finite number"),
    (",1,1,0.01,0.001", "prompt", "missing prompt"),
    ("p1,1,1,0.01,0.001", "prompt", "duplicate of"),
    ("p2,1,1,,0.001", "cost_usd.a", "empty cell"),
    ("p2,1,1,-1,0.001", "cost_usd.a", "outside"),
])
def test_bad_cell_names_file_row_and_column(tmp_path, bad_row, column, words):
    p = _csv(tmp_path, [GOOD[0], bad_row, GOOD[2]])
    with pytest.raises(TableError) as e:
        datasets.load_file(p)
    msg = str(e.value)
    assert str(p) in msg and "row 2 (line 3)" in msg and f"column {column}" in msg and words in msg


def test_quoted_multiline_prompt_reports_its_end_line(tmp_path):
    p = _csv(tmp_path, ['"a\nlong\nprompt",1,0,0.01,0.001', "p2,2,0,0.01,0.001"])
    with pytest.raises(TableError, match=r"row 2 \(line 5\), column quality.a"):
        datasets.load_file(p)


def test_cost_for_some_targets_only_is_an_error(tmp_path):
    p = _csv(tmp_path, ["p1,1,0,0.01", "p2,0,1,0.01"], head="prompt,quality.a,quality.b,cost_usd.a\n")
    with pytest.raises(TableError, match="cost_usd given for some targets only.*cost_usd.b"):
        datasets.load_file(p)


def test_missing_cost_cells_filled_per_cell_when_asked(tmp_path, capsys):
    p = _csv(tmp_path, ["p1,1,0,0.01,0.001", "p2,0,1,,0.002"])
    t = datasets.load_file(p, fill_missing_cost=True)
    assert "1 empty cost_usd cells (targets a)" in capsys.readouterr().err
    # measured cells untouched (the old loader dropped every measured cost for one empty cell)
    assert t.cost_usd[0].tolist() == [0.01, 0.001] and t.cost_usd[1, 1] == 0.002
    assert np.isfinite(t.cost_usd[1, 0]) and t.cost_usd[1, 0] > 0


def test_no_prompt_column_and_no_targets(tmp_path):
    with pytest.raises(TableError, match="no `prompt` column"):
        datasets.load_file(_csv(tmp_path, ["1,0"], head="text,quality.a\n"))
    with pytest.raises(TableError, match="no target columns"):
        datasets.load_file(_csv(tmp_path, ["p"], head="prompt\n", name="u.csv"))


def test_jsonl_wide_and_long_are_checked(tmp_path):
    wide = tmp_path / "w.jsonl"
    wide.write_text(json.dumps({"prompt": "x", "quality.a": 1, "quality.b": 0}) + "\n\n"
                    + json.dumps({"prompt": "y", "quality.a": 3, "quality.b": 0}) + "\n")
    with pytest.raises(TableError, match=r"w.jsonl row 2 \(line 3\), column quality.a: value outside"):
        datasets.load_file(wide)
    long = tmp_path / "l.jsonl"
    long.write_text(json.dumps({"prompt": "x", "target": "a", "quality": ""}) + "\n")
    with pytest.raises(TableError, match="l.jsonl row 1 \\(line 1\\), column quality: empty cell"):
        datasets.load_file(long)


def test_cli_rejects_before_embedding(tmp_path, capsys, monkeypatch):
    def no_embedding(*a, **k):
        raise AssertionError("embedding started on a bad table")

    monkeypatch.setattr(cli, "embeddings_for", no_embedding)
    p = _csv(tmp_path, [GOOD[0], "p2,1.5,1,0.01,0.001"])
    assert cli.main(["eval", "--data", str(p), "--json", "--quiet"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "row 2 (line 3), column quality.a" in err.err
    assert cli.main(["calibrate", "--data", str(p), "--budget-per-1k", "1", "--quiet"]) == 2


def test_llmrouter_dc_loads_with_its_prices():
    if not (LLMROUTER / "train.csv").is_file():
        pytest.skip("shared llmrouter-dc data not found")
    t = datasets.load(LLMROUTER)  # the folder means its train part
    assert len(t) == 5608 and len(t.targets) == 9
    assert t.prices["gemma-2-9b-it"] == (0.1, 0.1) and t.assumed_output_tokens == 256
    # the list prices the policy plans with reproduce the file's cost column exactly
    lp, tin = t.list_prices(), t.prompt_tokens()
    j = t.col("llama-3.1-nemotron-51b-instruct")
    planned = (tin * lp[t.targets[j]][0] + 256 * lp[t.targets[j]][1]) / 1e6
    assert np.allclose(planned, t.cost_usd[:, j], rtol=1e-9)
    test = datasets.load_file(LLMROUTER / "test.csv")
    assert len(test) == 381 and test.targets == t.targets
