"""`tune eval` / `tune calibrate` / `tune train` over many targets, end to end on small synthetic tables
(hash features, so no model is loaded): the JSON contract, no silent drop of a target, the two-target
special cases, and the promise that offline replay = what the serving objects do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from policies.tuning import cli, datasets, evaluate

PRICES = {"big": (1.0, 1.0), "coder": (0.3, 0.3), "small": (0.1, 0.1), "ace": (0.05, 0.05)}
TOPICS = ("code", "math", "chat")


def _quality(topic: str, target: str, rng) -> float:
    p = {"big": {"code": 0.8, "math": 0.9, "chat": 0.9}, "coder": {"code": 0.95, "math": 0.3, "chat": 0.4},
         "small": {"code": 0.2, "math": 0.3, "chat": 0.85}, "ace": {"code": 1.0, "math": 1.0, "chat": 1.0}}
    return float(rng.random() < p[target][topic])


def write_table(folder, name, n, targets=("big", "coder", "small"), seed=0):
    """A wide CSV like llmrouter-dc (prompt, tokens_in, quality.*, cost_usd.* = tokens x price) with a
    meta.json of list prices beside it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cols = ["prompt", "dataset", "tokens_in"] + [f"quality.{t}" for t in targets] + \
        [f"cost_usd.{t}" for t in targets]
    lines = [",".join(cols)]
    for i in range(n):
        topic = TOPICS[i % 3]
        words = " ".join(f"{topic}{rng.integers(0, 6)}" for _ in range(6))
        prompt = f"{topic} task {name} {i}: {words}"
        tin = len(prompt) // 4
        q = [_quality(topic, t, rng) for t in targets]
        c = [(tin * PRICES[t][0] + 256 * PRICES[t][1]) / 1e6 for t in targets]
        lines.append(",".join([prompt, "synth", str(tin)] + [f"{x:g}" for x in q] + [repr(x) for x in c]))
    path = folder / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n")
    (folder / "meta.json").write_text(json.dumps({"prices_per_mtok": {t: list(PRICES[t]) for t in targets},
                                                  "assumed_output_tokens": 256}))
    return path


def run_json(capsys, argv) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


CONTRACT_POLICY = {"name", "aiq", "best_quality", "cost_to_match_best", "quality_at_cheapest_cost", "arena"}


@pytest.mark.parametrize("protocol", ["cv", "split"])
def test_contract_json_for_many_targets(tmp_path, capsys, protocol):
    train = write_table(tmp_path, "train", 150)
    test = write_table(tmp_path, "test", 60, seed=1)
    args = (["--data", str(train), "--cv", "3"] if protocol == "cv"
            else ["--train", str(train), "--test", str(test)])
    r = run_json(capsys, ["eval", *args, "--json", "--quiet", "--encoder", "hash",
                          "--policies", "cheapest-fit:prior,cheapest-fit:knn,utility:logistic"])
    assert [t["id"] for t in r["targets"]] == ["big", "coder", "small"]
    assert all({"id", "quality", "cost_usd"} <= set(t) for t in r["targets"])
    rows = {p["name"]: p for p in r["policies"]}
    assert {"oracle", "random", "cheapest-fit:prior", "cheapest-fit:knn", "utility:logistic"} == set(rows)
    for p in rows.values():
        assert CONTRACT_POLICY <= set(p)
        assert p["cost_to_match_best"] is None or p["cost_to_match_best"] > 0
    assert r["n"] == (150 if protocol == "cv" else 60)
    # the oracle bounds every router, and a learned router beats the static prior on these topics
    assert rows["oracle"]["aiq"] >= max(p["aiq"] for p in rows.values())
    assert rows["cheapest-fit:knn"]["aiq"] > rows["cheapest-fit:prior"]["aiq"]


def test_third_target_cheapest_and_best_changes_the_output(tmp_path, capsys):
    path = write_table(tmp_path, "t", 90, targets=("big", "small", "ace"))
    base = ["eval", "--data", str(path), "--cv", "3", "--json", "--quiet", "--policies", "cheapest-fit:prior"]
    two = run_json(capsys, [*base, "--targets", "big,small"])
    three = run_json(capsys, base)
    assert [t["id"] for t in two["targets"]] == ["big", "small"] and "apgr" in two["policies"][0]
    assert three["best_target"] == "ace" and three["cheapest_target"] == "ace"
    assert any("also the cheapest" in n for n in three["notes"])
    r2 = {p["name"]: p for p in two["policies"]}
    r3 = {p["name"]: p for p in three["policies"]}
    # at min_quality 0 the prior router sends everything to the cheapest target: now ace (quality 1)
    assert r3["cheapest-fit:prior"]["quality_at_cheapest_cost"] == pytest.approx(1.0)
    assert r2["cheapest-fit:prior"]["quality_at_cheapest_cost"] < 0.7
    assert r3["oracle"]["best_quality"] == pytest.approx(1.0)
    assert r2["oracle"]["best_quality"] < 1.0


def _two_target(n=400, better_is_cheaper=True, seed=7):  # seed != the random router's 0
    rng = np.random.default_rng(seed)
    qa = (rng.random(n) < 0.8).astype(float)
    qb = (rng.random(n) < 0.5).astype(float)
    ca, cb = (1e-4, 1e-3) if better_is_cheaper else (1e-3, 1e-4)
    return datasets.RouteTable(prompts=[f"p{i}" for i in range(n)], targets=["a", "b"],
                               quality=np.stack([qa, qb], 1), dataset=np.full(n, "x"),
                               cost_usd=np.stack([np.full(n, ca), np.full(n, cb)], 1))


def test_two_targets_when_the_better_is_the_cheaper():
    t = _two_target()
    r = evaluate.evaluate(t, evaluate.Protocol("cv", k=5), [], progress=False)
    rows = {p["name"]: p for p in r["policies"]}
    assert r["strong"] == "a" and r["dearer"] == "b" and r["notes"]
    # CPT counts calls to the dearer target: none are needed to reach the better (cheaper) quality
    assert rows["random"]["cpt50"] == 0.0 and rows["oracle"]["cpt50"] == 0.0
    # AIQ is over the real cost range, not one value for every router: the oracle gains where b helps
    assert rows["random"]["aiq"] == pytest.approx(r["strong_quality"], abs=1e-9)
    assert rows["oracle"]["aiq"] > rows["random"]["aiq"]
    # the oracle pays for b only where b is right and a wrong (ties stay on the cheaper a)
    q = t.quality
    gain_rows = (q[:, 1] > q[:, 0]).mean()
    assert max(rows["oracle"]["curve"]["cost_usd"]) == pytest.approx(1e-4 + gain_rows * (1e-3 - 1e-4))


def test_two_target_metrics_unchanged_when_the_better_is_dearer():
    t = _two_target(better_is_cheaper=False)
    r = evaluate.evaluate(t, evaluate.Protocol("cv", k=5), [], progress=False)
    rows = {p["name"]: p for p in r["policies"]}
    assert r["dearer"] == "a" and not r["notes"]
    assert rows["random"]["apgr"] == pytest.approx(0.5, abs=0.1)
    assert rows["oracle"]["apgr"] > 1.0 and rows["oracle"]["cost_to_match_best"] < 1.0


def test_holdout_pair_chosen_without_test_labels():
    # on dataset x target a is better, on y (held out) b is: the pair comes from x
    n = 100
    qa = np.r_[np.ones(n), np.zeros(n)]
    qb = np.r_[np.zeros(n), np.ones(n) * 0.9]
    t = datasets.RouteTable(prompts=[f"p{i}" for i in range(2 * n)], targets=["a", "b"],
                            quality=np.stack([qa, qb], 1), dataset=np.r_[["x"] * n, ["y"] * n],
                            cost_usd=np.stack([np.full(2 * n, 1e-3), np.full(2 * n, 1e-4)], 1))
    r = evaluate.evaluate(t, evaluate.Protocol("holdout", holdout="y"), ["length"], progress=False)
    assert r["strong"] == "a" and r["weak"] == "b"


class HashEmbedder:
    """What a serving process would run per prompt with the hash features (the encoder seam)."""

    def __init__(self):
        from policies.tuning.embed import HashEncoder

        self.enc = HashEncoder()
        self.cache = {}  # like serving's LRU: the hash projection is rebuilt per encode call

    def embed_one(self, prompt):
        if prompt not in self.cache:
            self.cache[prompt] = self.enc.encode([prompt])[0]
        return self.cache[prompt]

    def embed(self, prompts, batch_size=64):
        return self.enc.encode(list(prompts))


def serve(snippet: dict, table, embedder) -> list[str | None]:
    """The cluster.yaml sections through the serving builders, one decide per prompt."""
    from policies.base import StaticView
    from policies.config import build_latency, build_policy, build_quality, parse_policy, parse_quality
    from policies.types import RouteRequest, Target

    targets = [Target(id=t, kind="local", input_price_per_mtok=PRICES[t][0],
                      output_price_per_mtok=PRICES[t][1], context_window=100_000) for t in table.targets]
    quality = build_quality(parse_quality(snippet["quality"]), targets, embedder=embedder)
    policy = build_policy(parse_policy(snippet["policy"]))
    view = StaticView(targets, build_latency(None, targets), quality)
    return [policy.decide(RouteRequest(prompt=p, prompt_tokens=int(tok), expected_output_tokens=256),
                          view).target for p, tok in zip(table.prompts, table.tokens_in, strict=True)]


def _measured(table, chosen):
    idx = np.array([table.col(t) for t in chosen])
    rows = np.arange(len(table))
    return table.quality[rows, idx].mean(), 1000 * table.cost_usd[rows, idx].mean(), idx


def test_tune_train_artifact_served_decides_like_the_offline_replay(tmp_path, capsys):
    train = write_table(tmp_path, "train", 150)
    test = write_table(tmp_path, "test", 60, seed=1)
    art = tmp_path / "art"
    info = run_json(capsys, ["train", "--data", str(train), "--kind", "knn", "--encoder", "hash",
                             "--out", str(art), "--json"])
    assert info["quality"] == {"kind": "knn", "artifact": str(art)}
    r = run_json(capsys, ["eval", "--train", str(train), "--test", str(test), "--encoder", "hash",
                          "--policies", "cheapest-fit:knn", "--json", "--quiet"])
    row = next(p for p in r["policies"] if p["name"] == "cheapest-fit:knn")
    cfg = row["policy_config"]
    t = datasets.load_file(test)
    curve = row["curve"]
    checked = 0
    embedder = HashEmbedder()
    for i, v in enumerate(curve["knob"]):
        if i % 5:
            continue
        chosen = serve({"policy": {**cfg, "min_quality": v}, "quality": info["quality"]}, t, embedder)
        q, c, _ = _measured(t, chosen)
        assert q == pytest.approx(curve["quality"][i], abs=1e-12)
        assert c == pytest.approx(1000 * curve["cost_usd"][i], rel=1e-12)
        checked += 1
    assert checked >= 5 and len(set(curve["quality"])) > 2  # the knob really moves the router
    # and decision by decision: the replay's own objects against the served artifact
    from policies.tuning import replay
    from policies.tuning.embed import embed

    both = datasets.concat([datasets.load_file(train), t])
    emb = embed(both.prompts, encoder="hash")
    n_tr = len(both) - len(t)
    fitted = replay.fit_split(both, emb, "knn", {}, np.arange(n_tr), np.arange(n_tr, len(both)),
                              tmp_path / "replayed")
    for v in (0.3, 0.5, 0.7):
        offline = replay.decide_all({**cfg, "min_quality": v}, None, fitted.requests, fitted.targets,
                                    fitted.quality)
        served = serve({"policy": {**cfg, "min_quality": v}, "quality": info["quality"]}, t, embedder)
        assert offline == served


@pytest.mark.parametrize("goal", [["--budget-per-1k", "0.12"], ["--quality-floor", "0.7"],
                                  ["--share", "small=0.3"]])
def test_calibrate_promise_equals_the_served_policy_on_the_test_set(tmp_path, capsys, goal):
    train = write_table(tmp_path, "train", 150)
    test = write_table(tmp_path, "test", 60, seed=1)
    art = tmp_path / "art"
    r = run_json(capsys, ["calibrate", "--train", str(train), "--test", str(test), "--policy", "cheapest-fit",
                          "--kind", "knn", "--encoder", "hash", "--save-artifact", str(art), *goal,
                          "--json", "--quiet"])
    snip = yaml.safe_load(r["snippet"])
    assert snip["quality"]["artifact"] == str(art) and snip["policy"]["min_quality"] == r["min_quality"]
    t = datasets.load_file(test)
    chosen = serve(snip, t, HashEmbedder())
    q, c, idx = _measured(t, chosen)
    assert q == pytest.approx(r["quality"], abs=1e-12)
    assert c == pytest.approx(r["cost_per_1k_usd"], rel=1e-12)
    for j, target in enumerate(t.targets):
        assert (idx == j).mean() == pytest.approx(r["shares"][target])
    assert r["goal_met"]
    if goal[0] == "--budget-per-1k":
        assert r["cost_per_1k_usd"] <= 0.12
    if goal[0] == "--quality-floor":
        assert r["quality"] >= 0.7


def test_calibrate_with_an_unmeetable_budget_warns(tmp_path, capsys):
    train = write_table(tmp_path, "train", 90)
    test = write_table(tmp_path, "test", 30, seed=1)
    assert cli.main(["calibrate", "--train", str(train), "--test", str(test), "--policy", "cheapest-fit",
                     "--kind", "prior", "--budget-per-1k", "0.00001", "--json", "--quiet"]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert r["goal_met"] is False and "no setting meets the budget" in r["warning"]
    assert "warning: no setting meets the budget" in out.err
    assert r["cost_per_1k_usd"] > 0.00001  # said, not hidden: the cheapest setting is over budget


def test_holdout_over_many_targets_trains_on_the_other_datasets(tmp_path, capsys):
    import csv

    a = write_table(tmp_path / "a", "a", 60)
    b = write_table(tmp_path / "b", "b", 30, seed=3)
    rows = list(csv.DictReader(a.open())) + [dict(r, dataset="other") for r in csv.DictReader(b.open())]
    both = tmp_path / "ab.csv"
    with both.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = run_json(capsys, ["eval", "--data", str(both), "--holdout", "other", "--json", "--quiet",
                          "--policies", "cheapest-fit:prior"])
    assert r["protocol"] == "holdout other" and r["n"] == 30 and r["n_train"] == 60
    assert r["dataset"] == ["other"]
    # the router's reference (train) qualities come from dataset a only
    ta = datasets.load_file(a)
    assert [t["train_quality"] for t in r["targets"]] == pytest.approx(ta.quality.mean(0).tolist())
