"""Embedding cache: keyed by encoder and prompts, under $ROUTER_CACHE_DIR (set per test by conftest)."""

from __future__ import annotations

import numpy as np

from policies.tuning import embed


class _Counting:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, prompts):
        self.calls += 1
        return embed.HashEncoder(dim=8).encode(prompts)


def test_cache_hits_and_keys(tmp_path):
    enc = _Counting()
    a = embed.embed(["x", "y"], enc)
    b = embed.embed(["x", "y"], enc)
    assert enc.calls == 1 and np.array_equal(a, b) and a.shape == (2, 8)
    embed.embed(["x", "z"], enc)
    assert enc.calls == 2
    files = list((embed.cache_dir() / "embeddings").glob("counting-*.npy"))
    assert len(files) == 2 and str(embed.cache_dir()).startswith(str(tmp_path))


def test_hash_encoder_is_deterministic_and_normalised():
    e1 = embed.HashEncoder().encode(["the cat sat", "a dog ran"])
    e2 = embed.HashEncoder().encode(["the cat sat", "a dog ran"])
    assert np.allclose(e1, e2) and np.allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
