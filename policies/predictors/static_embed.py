"""The fast featurizer `static`: a prompt's vector is the mean of fixed per-token rows, no network.

The rows are distilled once from the packaged all-MiniLM-L6-v2 by `routerctl tune featurizer build`
(the model2vec recipe, see policies/tuning/featurizer.py): every vocabulary token embedded by the
model on its own, PCA-reduced, weighted by an estimate of how rare it is. Serving then needs numpy and
the Rust `tokenizers` package only: no torch import, ~0.1-0.3 ms a prompt on one core, against
~45 ms for a MiniLM forward pass.

What it looks at: the **last** `max_tokens` tokens of the prompt (the router hands in the last user
turn). A few-shot preamble shared by every prompt comes first, the question last; MiniLM keeps the
first 256 tokens and so saw only the preamble (issue 13: one vector for 1,456 prompts). Text before
the window is cut before tokenising, so the cost is bounded whatever the prompt's size.

Artifact directory (written by the build, read here; no pickle):
    vectors.npy      (vocab, dim) float32, the weighted rows
    tokenizer.json   the source model's tokenizer
    meta.json        {"format", "kind": "static", "dim", "max_tokens", "source", "recipe", "sha256"}
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.predictors.embed import VectorCache, prompt_key

FORMAT = 1
DEFAULT_NAME = "static-minilm-d256"
VECTORS, TOKENIZER, META = "vectors.npy", "tokenizer.json", "meta.json"
# BERT's pre-tokeniser splits on whitespace and punctuation; each chunk this finds is then handed whole
# to the real tokenizer (once, cached), so ids equal the tokenizer's own on the text.
_CHUNK = re.compile(r"\w+|[^\w\s]")
_WORD_CACHE = 100_000  # distinct chunks remembered (~10 MB); cleared when full


def featurizer_root() -> Path:
    """Where built featurizers live: $ROUTER_CACHE_DIR/featurizers (default ~/.cache/llm-router)."""
    env = os.environ.get("ROUTER_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "llm-router") / "featurizers"


def default_path() -> Path:
    return featurizer_root() / DEFAULT_NAME


class FeaturizerMissing(FileNotFoundError):
    """No built featurizer where one was asked for; the message says how to build it."""


class StaticEmbedder:
    """Embedder interface (`embed`, `embed_one`, `dim`, `load`) over a built static table."""

    name = "static"

    def __init__(
        self,
        path: str | Path | None = None,
        cache_size: int = 4096,
        cache_bytes: int = 16 << 20,
        max_tokens: int | None = None,
    ) -> None:
        self.path = Path(path).expanduser() if path else default_path()
        self.cache = VectorCache(cache_size, cache_bytes)
        self._max_tokens = max_tokens
        self._vectors: np.ndarray | None = None
        self._tok: Any = None
        self._words: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}

    # -- loading -------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._vectors is not None

    def load(self) -> None:
        with self._lock:
            if self._vectors is not None:
                return
            d = self.path
            if not (d / META).is_file():
                raise FeaturizerMissing(
                    f"no static featurizer at {d}: build it with `routerctl tune featurizer build`"
                    + ("" if d == default_path() else f" --out {d}")
                )
            meta = json.loads((d / META).read_text())
            if meta.get("format") != FORMAT or meta.get("kind") != "static":
                raise ValueError(f"{d}: not a static featurizer of format {FORMAT} ({META} says "
                                 f"kind={meta.get('kind')!r}, format={meta.get('format')!r})")
            from tokenizers import Tokenizer

            vectors = np.load(d / VECTORS, allow_pickle=False)
            if vectors.ndim != 2 or vectors.shape[1] != int(meta["dim"]):
                raise ValueError(f"{d}: {VECTORS} has shape {vectors.shape}, meta says dim {meta['dim']}")
            tok = Tokenizer.from_file(str(d / TOKENIZER))
            if tok.get_vocab_size() != vectors.shape[0]:
                raise ValueError(f"{d}: tokenizer has {tok.get_vocab_size()} tokens, {VECTORS} "
                                 f"{vectors.shape[0]} rows")
            tok.no_truncation()
            tok.no_padding()
            self.meta, self._tok = meta, tok
            self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def dim(self) -> int:
        self.load()
        assert self._vectors is not None
        return int(self._vectors.shape[1])

    @property
    def max_tokens(self) -> int:
        return int(self._max_tokens or self.meta.get("max_tokens", 256))

    # -- featurizing ---------------------------------------------------------------------------------
    def token_ids(self, text: str) -> list[int]:
        """Ids of the last `max_tokens` tokens of `text`, special tokens excluded."""
        self.load()
        n = self.max_tokens
        cut = n * 10  # >= n tokens of ordinary text; bounds the work for huge prompts (see embed_one)
        if len(text) > cut:
            text = text[-cut:]
            space = re.search(r"\s", text)
            if space is not None:  # drop the word the cut went through
                text = text[space.end():]
        words = self._words
        ids: list[int] = []
        for chunk in _CHUNK.findall(text.lower()):
            got = words.get(chunk)
            if got is None:
                got = self._tok.encode(chunk, add_special_tokens=False).ids
                if len(words) >= _WORD_CACHE:
                    words.clear()
                words[chunk] = got
            ids.extend(got)
        return ids[-n:]

    def _vector(self, text: str) -> np.ndarray:
        assert self._vectors is not None
        ids = self.token_ids(text)
        if not ids:
            return np.zeros(self._vectors.shape[1], dtype=np.float32)
        v = self._vectors[ids].mean(axis=0)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 1e-12 else v

    def embed(self, prompts: Sequence[str], batch_size: int = 0) -> np.ndarray:
        """(n, dim) float32 unit rows (a prompt with no tokens gives a zero row)."""
        self.load()
        out = np.empty((len(prompts), self.dim), dtype=np.float32)
        for i, p in enumerate(prompts):
            out[i] = self._vector(p)
        return out

    def embed_one(self, prompt: str) -> np.ndarray:
        # The vector depends only on the window's worth of text at the end: hash that (bounded work,
        # and prompts that differ only further back share an entry).
        if self._vectors is None:
            self.load()  # first: max_tokens comes from the artifact
        key = prompt_key(prompt[-self.max_tokens * 10:])
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return self.cache.put(key, self._vector(prompt).astype(np.float32))
