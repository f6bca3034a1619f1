"""Two-target router scorers for offline replay: higher score = send to the strong target.

Each scorer learns from train rows (the per-target quality columns) and scores test rows; the score is
what RouteLLM calls the strong win rate, here an estimate of E[q_strong - q_weak | prompt], the gain of
calling the strong model. Scorers see only what a router sees before answering: the prompt, its
embedding, its length, and its group (MMLU subject from the file name, MT Bench category).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from policies.tuning.datasets import RouteTable


@dataclass
class Split:
    """Rows of one side of a split with their embeddings (None when no scorer needs them)."""

    table: RouteTable
    emb: np.ndarray | None
    strong: int  # column of the strong target
    weak: int

    @property
    def gain(self) -> np.ndarray:
        return self.table.quality[:, self.strong] - self.table.quality[:, self.weak]

    @property
    def log_len(self) -> np.ndarray:
        return np.log1p(np.array([len(p) for p in self.table.prompts], dtype=float))


class Scorer:
    name = "base"
    needs_embeddings = False
    pays_weak = False  # True for cascades: every prompt also pays the weak call

    def fit(self, train: Split) -> Scorer:
        return self

    def score(self, test: Split) -> np.ndarray:
        raise NotImplementedError


class RandomScorer(Scorer):
    """RouteLLM's random router: a uniform score per prompt."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, test: Split) -> np.ndarray:
        return self.rng.random(len(test.table))


class GroupPrior(Scorer):
    """Mean gain of the prompt's group on the train rows, shrunk towards the global mean."""

    name = "group-prior"

    def __init__(self, strength: float = 20.0) -> None:
        self.strength = strength
        self.table: dict[str, float] = {}
        self.glob = 0.0

    def fit(self, train: Split) -> GroupPrior:
        g, gain = train.table.group, train.gain
        self.glob = float(gain.mean())
        for key in np.unique(g):
            m = g == key
            self.table[str(key)] = float((gain[m].sum() + self.strength * self.glob)
                                         / (m.sum() + self.strength))
        return self

    def score(self, test: Split) -> np.ndarray:
        return np.array([self.table.get(str(k), self.glob) for k in test.table.group])


class LengthScorer(Scorer):
    """Prompt length, with the sign (longer = harder or easier) learned from the train rows."""

    name = "length"

    def fit(self, train: Split) -> LengthScorer:
        x, g = train.log_len, train.gain
        c = np.corrcoef(x, g)[0, 1] if np.ptp(x) > 0 and np.ptp(g) > 0 else 0.0
        self.sign = 1.0 if not np.isfinite(c) or c >= 0 else -1.0
        return self

    def score(self, test: Split) -> np.ndarray:
        return self.sign * test.log_len


class KnnScorer(Scorer):
    """Similarity-weighted mean gain of the k nearest train prompts (cosine on embeddings)."""

    name = "knn"
    needs_embeddings = True

    def __init__(self, k: int = 40) -> None:
        self.k = k

    def fit(self, train: Split) -> KnnScorer:
        assert train.emb is not None
        self.emb, self.gain = train.emb, train.gain
        return self

    def score(self, test: Split) -> np.ndarray:
        assert test.emb is not None
        out = np.empty(len(test.table))
        k = min(self.k, len(self.gain))
        for s in range(0, len(out), 2048):
            sim = test.emb[s:s + 2048] @ self.emb.T
            idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.maximum(np.take_along_axis(sim, idx, axis=1), 0.0) + 1e-6
            out[s:s + 2048] = (w * self.gain[idx]).sum(1) / w.sum(1)
        return out


def _design(split: Split, groups: list[str]) -> np.ndarray:
    """Embedding + one-hot group + standardised log length: the learned scorers' input."""
    parts = [split.emb] if split.emb is not None else []
    onehot = np.zeros((len(split.table), len(groups)), dtype=np.float32)
    index = {g: i for i, g in enumerate(groups)}
    for r, g in enumerate(split.table.group):
        if g in index:
            onehot[r, index[g]] = 1.0
    ll = split.log_len[:, None]
    parts += [onehot, ((ll - 5.5) / 1.5).astype(np.float32)]
    return np.hstack(parts)


class _PerTarget(Scorer):
    """Fits one model per target on quality; score = predicted strong - predicted weak quality."""

    needs_embeddings = True

    def _model(self, binary: bool):  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, train: Split) -> _PerTarget:
        self.groups = sorted({str(g) for g in train.table.group} - {""})
        x = _design(train, self.groups)
        self.models = []
        for col in (train.strong, train.weak):
            y = train.table.quality[:, col]
            binary = bool(np.isin(y, (0.0, 1.0)).all())
            if binary and len(np.unique(y)) == 1:
                self.models.append(float(y[0]))
                continue
            m = self._model(binary)
            self.models.append(m.fit(x, y.astype(int) if binary else y))
        return self

    def _predict(self, m, x: np.ndarray) -> np.ndarray:
        if isinstance(m, float):
            return np.full(len(x), m)
        return m.predict_proba(x)[:, 1] if hasattr(m, "predict_proba") else m.predict(x)

    def score(self, test: Split) -> np.ndarray:
        x = _design(test, self.groups)
        return self._predict(self.models[0], x) - self._predict(self.models[1], x)


class LogisticScorer(_PerTarget):
    name = "logistic"

    def __init__(self, c: float = 0.5) -> None:
        self.c = c

    def _model(self, binary: bool):
        from sklearn.linear_model import LogisticRegression, Ridge

        return LogisticRegression(C=self.c, max_iter=500) if binary else Ridge(alpha=1.0 / self.c)


class MlpScorer(_PerTarget):
    name = "mlp"

    def _model(self, binary: bool):
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        kw = dict(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=200, early_stopping=True,
                  random_state=0)
        return MLPClassifier(**kw) if binary else MLPRegressor(**kw)


class GainScorer(Scorer):
    """One model of the gain itself: multinomial logistic over gain in {-1, 0, +1} (0/1 quality),
    score = P(+1) - P(-1); ridge regression on the gain for graded quality."""

    name = "gain"
    needs_embeddings = True

    def __init__(self, c: float = 0.5) -> None:
        self.c = c

    def fit(self, train: Split) -> GainScorer:
        from sklearn.linear_model import LogisticRegression, Ridge

        self.groups = sorted({str(g) for g in train.table.group} - {""})
        x, g = _design(train, self.groups), train.gain
        self.classes = np.unique(g)
        if set(self.classes) <= {-1.0, 0.0, 1.0} and len(self.classes) > 1:
            self.model = LogisticRegression(C=self.c, max_iter=500).fit(x, g.astype(int))
        else:
            self.model = Ridge(alpha=1.0 / self.c).fit(x, g)
        return self

    def score(self, test: Split) -> np.ndarray:
        x = _design(test, self.groups)
        if not hasattr(self.model, "predict_proba"):
            return self.model.predict(x)
        p = self.model.predict_proba(x)
        return p @ self.model.classes_.astype(float)  # expected gain


class CascadeScorer(Scorer):
    """Not a router but a cascade: the weak target answers first and a classifier on that ANSWER
    (hashed n-grams, length, whether it states a final '####' number, calculator-annotation checks)
    predicts whether it is wrong; score = P(weak wrong). Every prompt pays the weak call, and the
    strong-call share is the escalation rate. Needs answer texts (RouteLLM GSM8K has them)."""

    name = "cascade-weak-answer"
    pays_weak = True  # the weak answer is always bought

    def _x(self, split: Split) -> np.ndarray:
        import re

        from policies.tuning.embed import HashEncoder

        if split.table.answers is None:
            raise ValueError("cascade replay needs the weak target's answers in the table")
        texts = [str(a) for a in split.table.answers[:, split.weak]]
        hand = []
        for t in texts:
            calcs = re.findall(r"<<([^=<>]+)=([^<>]+)>>", t)
            bad = 0
            for lhs, rhs in calcs:
                try:
                    bad += abs(eval(lhs, {"__builtins__": {}}) - float(rhs)) > 1e-6  # noqa: S307
                except Exception:  # noqa: BLE001 - a malformed annotation is itself a signal
                    bad += 1
            final = re.findall(r"####\s*\$?\s*(-?[\d,]*\.?\d+)", t)
            try:
                v = float(final[-1].replace(",", "")) if final else float("nan")
            except ValueError:
                v = float("nan")
            ok = bool(np.isfinite(v))
            hand.append([np.log1p(len(t)), "####" in t, len(calcs), bad, t.count("\n"),
                         ok and v == round(v), ok and v < 0, np.log1p(abs(v)) if ok else -1.0,
                         bool(re.search(r"(?i)\b(however|assum|unclear|not possible|cannot)\b", t))])
        return np.hstack([HashEncoder(dim=256).encode(texts), np.array(hand, dtype=np.float32)])

    def fit(self, train: Split) -> CascadeScorer:
        from sklearn.linear_model import LogisticRegression

        y = (train.table.quality[:, train.weak] >= 0.5).astype(int)
        self.model = LogisticRegression(C=1.0, max_iter=1000).fit(self._x(train), y)
        return self

    def score(self, test: Split) -> np.ndarray:
        return self.model.predict_proba(self._x(test))[:, 0]


class EnsembleScorer(Scorer):
    """Mean rank of several scorers' scores (each fitted on the same train rows)."""

    needs_embeddings = True

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.name = "ensemble(" + "+".join(names) + ")"

    def fit(self, train: Split) -> EnsembleScorer:
        self.parts = [SCORERS[n]().fit(train) for n in self.names]
        return self

    def score(self, test: Split) -> np.ndarray:
        ranks = [np.argsort(np.argsort(p.score(test), kind="stable")) for p in self.parts]
        return np.mean(ranks, axis=0) / max(len(test.table) - 1, 1)


class MfScorer(Scorer):
    """RouteLLM-style matrix factorisation: q(prompt, model) ~ sigmoid(v_model . (P x) + b_model),
    x the prompt features, P a shared projection; trained by full-batch Adam on squared error."""

    name = "mf"
    needs_embeddings = True

    def __init__(self, dim: int = 32, steps: int = 300, lr: float = 0.01, l2: float = 1e-3,
                 seed: int = 0) -> None:
        self.dim, self.steps, self.lr, self.l2, self.seed = dim, steps, lr, l2, seed

    def fit(self, train: Split) -> MfScorer:
        self.groups = sorted({str(g) for g in train.table.group} - {""})
        x = _design(train, self.groups).astype(np.float64)
        y = train.table.quality[:, [train.strong, train.weak]]
        rng = np.random.default_rng(self.seed)
        params = [rng.normal(0, 0.1, (x.shape[1], self.dim)), rng.normal(0, 0.1, (self.dim, 2)),
                  np.zeros(2)]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        n = len(x)
        for t in range(1, self.steps + 1):
            p, vm, b = params
            h = x @ p
            pred = 1.0 / (1.0 + np.exp(-(h @ vm + b)))
            d = 2.0 * (pred - y) * pred * (1.0 - pred) / n
            grads = [x.T @ (d @ vm.T) + self.l2 * p, h.T @ d + self.l2 * vm, d.sum(0)]
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                params[i] -= self.lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
        self.params = params
        return self

    def score(self, test: Split) -> np.ndarray:
        p, vm, b = self.params
        z = (_design(test, self.groups) @ p) @ vm + b
        return z[:, 0] - z[:, 1]  # logit gap: monotone in the strong model's edge


class EngineScorer(Scorer):
    """A policy-engine predictor (policies.predictors) on embeddings only: score = P(strong ok) -
    P(weak ok), exactly what the serving quality-threshold policy would compare."""

    needs_embeddings = True

    def __init__(self, kind: str, **params: object) -> None:
        self.kind, self.params = kind, params
        self.name = f"engine-{kind}"

    def fit(self, train: Split) -> EngineScorer:
        from policies.tuning.train import fit

        assert train.emb is not None
        self.strong_id = train.table.targets[train.strong]
        self.weak_id = train.table.targets[train.weak]
        self.pred = fit(train.table, train.emb, self.kind, **self.params)
        return self

    def score(self, test: Split) -> np.ndarray:
        p = self.pred.predict_embeddings(test.emb)
        return np.asarray(p[self.strong_id]) - np.asarray(p[self.weak_id])


SCORERS: dict[str, Callable[[], Scorer]] = {
    "group-prior": GroupPrior,
    "length": LengthScorer,
    "knn": KnnScorer,
    "logistic": LogisticScorer,
    "mlp": MlpScorer,
    "mf": MfScorer,
    "gain": GainScorer,
    "cascade-weak-answer": CascadeScorer,
    "ensemble": lambda: EnsembleScorer(("group-prior", "knn", "logistic", "gain")),
    "engine-knn": lambda: EngineScorer("knn", k=40),
    "engine-logistic": lambda: EngineScorer("logistic"),
    "engine-mlp": lambda: EngineScorer("logistic", hidden=64),
    "engine-mf": lambda: EngineScorer("mf"),
}
DEFAULT_SCORERS = ("group-prior", "length", "knn", "logistic", "gain", "mlp", "mf", "ensemble",
                   "engine-knn", "engine-logistic", "engine-mf", "cascade-weak-answer")
