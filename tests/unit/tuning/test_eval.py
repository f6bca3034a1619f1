"""Offline replay: random's APGR on RouteLLM MMLU, the --json contract, and a small learned run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.tuning import cli, datasets, evaluate


def test_random_apgr_is_half_on_routellm_mmlu(routellm, capsys):
    # no learned scorers: random and oracle only, no embeddings (fast path)
    rc = cli.main(["eval", "--data", str(routellm), "--dataset", "mmlu", "--cv", "5", "--json",
                   "--policies", "", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON object on stdout
    rows = {p["name"]: p for p in report["policies"]}
    assert {"random", "oracle"} <= set(rows)
    for p in rows.values():
        assert {"name", "apgr", "cpt50", "cpt80", "aiq"} <= set(p)
        assert 0.0 <= p["cpt50"] <= 1.0 and 0.0 <= p["cpt80"] <= 1.0
    assert rows["random"]["apgr"] == pytest.approx(0.50, abs=0.03)
    assert rows["random"]["cpt50"] == pytest.approx(0.50, abs=0.05)
    assert rows["oracle"]["apgr"] > 1.0 and rows["oracle"]["cpt50"] < 0.1
    assert report["n"] == len(datasets.load_routellm(routellm, "mmlu"))


def test_learned_scorers_beat_random_on_gsm8k_subset(routellm, tmp_path):
    t = datasets.load_routellm(routellm, "gsm8k").subset(np.arange(600))
    from policies.tuning.embed import embed

    emb = embed(t.prompts, "hash")
    names = ["length", "knn", "logistic", "mf"]
    r = evaluate.evaluate(t, evaluate.Protocol("cv", k=5), names, emb, progress=False)
    rows = {p["name"]: p for p in r["policies"]}
    assert set(rows) == {"random", "oracle", *names}
    best = evaluate.best_learned(r)
    assert best is not None and best["apgr"] > rows["random"]["apgr"]
    assert rows["oracle"]["apgr"] >= best["apgr"]
    md = evaluate.markdown(r)
    assert "| oracle |" in md and "APGR" in md
    files = evaluate.plot(r, str(tmp_path / "gsm8k"))
    assert all((tmp_path / f.split("/")[-1]).stat().st_size > 1000 for f in files)


def test_holdout_trains_on_other_datasets(routellm, capsys):
    rc = cli.main(["eval", "--data", str(routellm), "--holdout", "mt_bench", "--json", "--quiet",
                   "--policies", "group-prior,length"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == ["mt_bench"] and report["protocol"] == "holdout mt_bench"
    assert len(report["policies"]) == 4


def test_kfold_partitions_rows():
    folds = evaluate.kfold(103, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(103))


@pytest.mark.parametrize("sub", ["collect", "train", "eval", "calibrate", "simulate"])
def test_every_subcommand_has_help(sub, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="routerctl")
    cli.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["tune", sub, "--help"])
    assert e.value.code == 0 and "usage: routerctl tune " + sub in capsys.readouterr().out
