"""Calibration, shrinkage towards the prior, the IRT predictor, and their artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from policies.predictors import IRTPredictor, KNNPredictor, LogisticPredictor, load_predictor
from policies.predictors.calibration import Calibrators, isotonic_fit, platt_fit
from policies.types import Target


def _synthetic(n=1500, d=8, seed=0):
    """Embeddings whose true P(ok) per target is a known function of the prompt."""
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, d)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    w = rng.normal(size=d)
    difficulty = 3.0 * (E @ w)
    true = {"weak": 1 / (1 + np.exp(difficulty + 0.5)), "strong": 1 / (1 + np.exp(difficulty - 1.5))}
    labels = {t: (rng.random(n) < p).astype(float) for t, p in true.items()}
    return E, labels, true


def _reliability_gap(p, y, bins=10):
    """Largest |mean prediction - observed frequency| over equal-count bins."""
    o = np.argsort(p)
    return max(abs(p[o][b].mean() - y[o][b].mean()) for b in np.array_split(np.arange(len(p)), bins))


def test_isotonic_and_platt_fit_known_maps():
    xs, ys = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    # PAV pools the violating middle pair: 0, (1+0)/2, 1.
    np.testing.assert_allclose(ys, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(xs, [0.1, 0.25, 0.4])
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    x = 1 / (1 + np.exp(-z))
    y = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(float)
    a, b = platt_fit(x, y)
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(-1.0, abs=0.2)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_maps_overconfident_scores_to_observed_frequencies(method):
    rng = np.random.default_rng(1)
    true = rng.random(5000)
    y = (rng.random(5000) < true).astype(float)
    # An overconfident predictor: pushes every probability towards 0 or 1.
    raw = 1 / (1 + np.exp(-4 * np.log(true / (1 - true))))
    assert _reliability_gap(raw, y) > 0.1
    cal = Calibrators.fit(method, raw[:, None], y[:, None])
    p = cal.apply(raw[:, None])[:, 0]
    assert _reliability_gap(p, y) < 0.05


def test_knn_with_isotonic_calibration_is_reliable_on_held_out_prompts():
    E, labels, _ = _synthetic(n=4000)
    tr, te = slice(0, 2500), slice(2500, None)
    raw = KNNPredictor(k=3, smoothing=0.0).fit(E[tr], {t: y[tr] for t, y in labels.items()})
    cal = KNNPredictor(k=3, smoothing=0.0, calibration="isotonic").fit(
        E[tr], {t: y[tr] for t, y in labels.items()})
    for t in labels:
        gap_raw = _reliability_gap(raw.predict_embeddings(E[te])[t], labels[t][te], bins=5)
        gap_cal = _reliability_gap(cal.predict_embeddings(E[te])[t], labels[t][te], bins=5)
        assert gap_cal < 0.08 and gap_cal < gap_raw, (t, gap_raw, gap_cal)


def test_shrinkage_pulls_unfamiliar_prompts_to_the_prior_and_leaves_familiar_ones():
    E, labels, _ = _synthetic(d=16)
    E[:, 8:] = 0  # training prompts live in one half of the space ...
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    plain = LogisticPredictor(steps=200).fit(E, labels)
    shrunk = LogisticPredictor(steps=200, shrink=True).fit(E, labels)
    familiar = E[:50]
    strange = np.zeros((5, 16), dtype=np.float32)
    strange[:, 8:] = np.random.default_rng(3).normal(size=(5, 8))  # ... these in the other
    assert np.all(shrunk.support_embeddings(familiar) > 0.9)
    assert np.all(shrunk.support_embeddings(strange) == 0.0)
    for t, prior in shrunk.prior.items():
        assert prior == pytest.approx(np.mean(labels[t]))
        np.testing.assert_allclose(shrunk.predict_embeddings(strange)[t], prior)
        s_f, p_f = shrunk.predict_embeddings(familiar)[t], plain.predict_embeddings(familiar)[t]
        assert np.mean(np.abs(s_f - p_f)) < 0.02


def test_irt_gives_a_target_with_few_labels_its_prior_and_the_shared_difficulty():
    E, labels, true = _synthetic()
    few = np.full(len(E), np.nan)
    few[:3] = labels["strong"][:3]
    labels = {**labels, "new": few}
    pred = IRTPredictor(steps=300, priors={"new": 0.8}).fit(E, labels)
    P = pred.predict_embeddings(E)
    assert np.mean(P["new"]) == pytest.approx(0.8, abs=0.08)
    # The well-labelled targets are fitted by their data, not their prior ...
    for t in ("weak", "strong"):
        assert np.corrcoef(P[t], true[t])[0, 1] > 0.9
        assert np.mean(P[t]) == pytest.approx(np.mean(labels[t]), abs=0.03)
    # ... and the new target still ranks prompts by the difficulty the others taught.
    assert np.corrcoef(P["new"], true["strong"])[0, 1] > 0.8
    # Without a given prior, a sparse target sits near the mean of all labels.
    plain = IRTPredictor(steps=300).fit(E, labels).predict_embeddings(E)
    overall = np.nanmean(np.concatenate([labels["weak"], labels["strong"], few]))
    assert np.mean(plain["new"]) == pytest.approx(overall, abs=0.08)


class _Embedder:
    def __init__(self, E):
        self.E = E

    def embed_one(self, prompt):
        return self.E[int(prompt)]

    def embed(self, prompts):
        return self.E[[int(p) for p in prompts]]


@pytest.mark.parametrize(
    "make",
    [lambda: KNNPredictor(k=15, calibration="isotonic", shrink=True),
     lambda: LogisticPredictor(steps=100, calibration="platt", shrink=True),
     lambda: IRTPredictor(steps=100, calibration="isotonic", shrink=True, priors={"weak": 0.3})],
    ids=["knn-isotonic", "logistic-platt", "irt-isotonic"],
)
def test_calibrated_shrunk_artifacts_round_trip_with_identical_predictions(make, tmp_path):
    E, labels, _ = _synthetic(n=600)
    pred = make().fit(E[:500], {t: y[:500] for t, y in labels.items()})
    again = load_predictor(pred.save(tmp_path / "a"), embedder=_Embedder(E))
    assert type(again) is type(pred) and again.prior == pred.prior
    for t, p in pred.predict_embeddings(E[500:]).items():
        np.testing.assert_array_equal(again.predict_embeddings(E[500:])[t], p)
    np.testing.assert_array_equal(again.support_embeddings(E[500:]), pred.support_embeddings(E[500:]))
    targets = [Target(id="weak", kind="local"), Target(id="strong", kind="local")]
    out = again.predict("520", targets)
    assert out["weak"] == pytest.approx(pred.predict_embeddings(E[520:521])["weak"][0])
    assert again.support("520") == pytest.approx(float(pred.support_embeddings(E[520:521])[0]))


def test_knn_tunes_k_on_out_of_fold_brier_score():
    E, labels, true = _synthetic(n=1200)
    pred = KNNPredictor(tune_k=(1, 5, 25, 100)).fit(E, labels)
    # 1 neighbour is noise, and the Brier score says so; the chosen k is the grid's best.
    assert set(pred.k_scores) == {1, 5, 25, 100}
    assert pred.k == min(pred.k_scores, key=pred.k_scores.get) and pred.k != 1
    assert pred.k_scores[1] > pred.k_scores[pred.k]


def test_ensemble_is_the_mean_of_its_members_and_round_trips(tmp_path):
    from policies.predictors import EnsemblePredictor

    E, labels, _ = _synthetic(n=600)
    members = [{"kind": "knn", "k": 20}, {"kind": "logistic", "steps": 100}]
    ens = EnsemblePredictor(members=members).fit(E[:500], {t: y[:500] for t, y in labels.items()})
    knn = KNNPredictor(k=20).fit(E[:500], {t: y[:500] for t, y in labels.items()})
    log = LogisticPredictor(steps=100).fit(E[:500], {t: y[:500] for t, y in labels.items()})
    for t, p in ens.predict_embeddings(E[500:]).items():
        mean = (knn.predict_embeddings(E[500:])[t] + log.predict_embeddings(E[500:])[t]) / 2
        np.testing.assert_allclose(p, mean, rtol=1e-6)
    again = load_predictor(ens.save(tmp_path / "e"))
    for t, p in ens.predict_embeddings(E[500:]).items():
        np.testing.assert_array_equal(again.predict_embeddings(E[500:])[t], p)
    with pytest.raises(ValueError, match="member kind"):
        EnsemblePredictor(members=[{"kind": "prior"}])
