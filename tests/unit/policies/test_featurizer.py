"""The fast `static` featurizer: what it reads of a prompt, its bounded cache, its artifact, the build,
the record that ties a predictor to its featurizer, and the degenerate-feature warning."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from policies.predictors import KNNPredictor
from policies.predictors.embed import VectorCache, packaged_model_dir
from policies.predictors.featurizers import embedder_for, record, recorded
from policies.predictors.static_embed import FeaturizerMissing, StaticEmbedder

VOCAB = 30522


def tiny_static(d: Path, dim: int = 16, max_tokens: int = 32, seed: int = 0) -> Path:
    """A static featurizer artifact with random rows over the real MiniLM tokenizer (no build needed)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(d / "vectors.npy", rng.normal(size=(VOCAB, dim)).astype(np.float32))
    shutil.copyfile(packaged_model_dir() / "tokenizer.json", d / "tokenizer.json")
    (d / "meta.json").write_text(json.dumps({"format": 1, "kind": "static", "dim": dim,
                                             "max_tokens": max_tokens, "sha256": f"fake-{seed}"}))
    return d


@pytest.fixture
def static(tmp_path: Path) -> StaticEmbedder:
    return StaticEmbedder(tiny_static(tmp_path / "static"))


def test_embed_gives_unit_float32_rows_and_embed_one_matches(static: StaticEmbedder) -> None:
    prompts = ["How do I bake bread?", "Prove that sqrt(2) is irrational.", "hello"]
    E = static.embed(prompts)
    assert E.dtype == np.float32 and E.shape == (3, 16)
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    one = static.embed_one(prompts[1])
    assert np.allclose(one, E[1], atol=1e-6)
    assert static.embed_one(prompts[1]) is one  # cache hit
    assert not one.flags.writeable


def test_token_ids_are_the_tokenizers_own_ids_of_the_prompts_end(static: StaticEmbedder) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    text = "Résumé: the quick-brown fox_jumps over 3.14 lazy dogs, doesn't it? 東京 " * 3
    want = tok.encode(text, add_special_tokens=False).ids
    assert static.token_ids(text) == want[-32:]
    assert len(want) > 32  # the window really cut something


def test_a_shared_preamble_longer_than_the_window_does_not_hide_the_question(static: StaticEmbedder) -> None:
    preamble = "Q: what is one plus one? A: two. " * 100  # far beyond 32 tokens
    a = static.embed_one(preamble + "Name the capital city of France.")
    b = static.embed_one(preamble + "Integrate x squared from zero to one.")
    assert float(a @ b) < 0.9  # what differs decides the vector; MiniLM's head window gave 1.0


def test_huge_prompts_cost_a_window_and_share_its_cache_entry(static: StaticEmbedder) -> None:
    tail = " and finally: " + "which planet is the largest in the solar system? " * 10  # > the window
    huge = "filler words " * 100_000 + tail  # 1.3 MB
    v = static.embed_one(huge)
    assert np.allclose(v, static.embed_one("other stuff " * 100_000 + tail))
    assert len(static.cache) == 1


def test_vector_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = VectorCache(max_entries=100, max_bytes=20_000)
    for i in range(1000):
        cache.put(i.to_bytes(16, "little"), np.ones(64, dtype=np.float32))  # 256 B + overhead each
        assert cache.nbytes <= 20_000 and len(cache) <= 100
    assert cache.get((999).to_bytes(16, "little")) is not None  # newest kept
    assert cache.get((0).to_bytes(16, "little")) is None  # oldest evicted
    assert cache.nbytes == sum(v.nbytes + 16 + 200 for v in cache._d.values())


def test_cache_memory_stays_bounded_with_many_large_distinct_prompts(tmp_path: Path) -> None:
    emb = StaticEmbedder(tiny_static(tmp_path / "s"), cache_bytes=64_000)
    emb.embed_one("load first")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(300):  # 300 x 100 kB of prompt text; keyed by the text this would keep 30 MB
        emb.embed_one(f"{i} " + "x" * 100_000 + f" question {i}")
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert emb.cache.nbytes <= 64_000
    assert grown < 2_000_000


def test_missing_or_broken_featurizer_fails_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FeaturizerMissing, match="routerctl tune featurizer build"):
        StaticEmbedder(tmp_path / "nothing").load()
    d = tiny_static(tmp_path / "bad")
    np.save(d / "vectors.npy", np.zeros((10, 16), np.float32))
    with pytest.raises(ValueError, match="tokenizer has 30522 tokens"):
        StaticEmbedder(d).load()


def test_predictor_artifact_records_its_featurizer_and_serving_rebuilds_it(tmp_path: Path) -> None:
    feat = StaticEmbedder(tiny_static(tmp_path / "feat"))
    prompts = ["add two numbers", "write a poem about rain", "what is the capital of Peru"]
    E = feat.embed(prompts)
    pred = KNNPredictor(k=2).fit(E, {"a": np.array([1.0, 0.0, 1.0]), "b": np.array([0.0, 1.0, 1.0])})
    art = pred.save(tmp_path / "art")
    assert recorded(art) == {"encoder": "minilm"}  # no record: an artifact from before featurizers
    record(art, "static", feat)
    info = recorded(art)
    assert info["encoder"] == "static" and info["dim"] == 16 and info["sha256"] == "fake-0"
    served = embedder_for(art)
    assert isinstance(served, StaticEmbedder) and served.path == feat.path
    assert np.allclose(served.embed_one(prompts[2]), E[2], atol=1e-6)
    with pytest.raises(ValueError, match="trained on 'static' features"):
        embedder_for(art, "minilm")
    tiny_static(feat.path, seed=1)  # rebuilt with other rows: the predictor's weights no longer fit
    with pytest.raises(ValueError, match="not the build"):
        embedder_for(art)


def test_build_writes_a_loadable_artifact_and_skips_when_up_to_date(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.tuning import featurizer

    calls = []

    def fake_vectors(model_dir: Path, batch: int = 1024, progress: bool = True) -> np.ndarray:
        calls.append(model_dir)  # the real one runs MiniLM over 30k tokens (~1 min)
        return np.random.default_rng(0).normal(size=(VOCAB, 24)).astype(np.float32)

    monkeypatch.setattr(featurizer, "token_vectors", fake_vectors)
    out = tmp_path / "built"
    info = featurizer.build(out, dim=8, max_tokens=64, progress=False)
    assert not info["skipped"] and info["dim"] == 8
    emb = StaticEmbedder(out)
    assert emb.dim == 8 and emb.max_tokens == 64
    assert np.allclose(np.linalg.norm(emb.embed(["some text", "more text"]), axis=1), 1.0, atol=1e-5)
    vec = np.load(out / "vectors.npy")
    assert np.all(vec[0] == 0) and np.all(vec[101] == 0)  # [PAD], [CLS]: weight 0
    assert featurizer.build(out, dim=8, max_tokens=64, progress=False)["skipped"]
    assert not featurizer.build(out, dim=4, max_tokens=64, progress=False)["skipped"]
    assert len(calls) == 1  # the model pass is kept for rebuilds with other parameters


def test_zipf_weights_favour_rare_tokens_and_zero_specials() -> None:
    from policies.tuning.featurizer import zipf_weights

    w = zipf_weights({"[PAD]": 0, "[unused0]": 1, "the": 2, "of": 3, "zygote": 4}, sif=1e-3)
    assert w[0] == 0 and w[1] == 0
    assert 0 < w[2] < w[3] < w[4] <= 1


def test_degenerate_features_warn(capsys: pytest.CaptureFixture[str]) -> None:
    from policies.tuning.embed import degeneracy, warn_if_degenerate

    prompts = [f"shared few-shot preamble ... question {i}" for i in range(50)]
    same = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (50, 1))  # one vector for every prompt
    d = warn_if_degenerate(prompts, same, "minilm")
    assert d["collapsed_share"] == 1.0
    assert "degenerate features" in capsys.readouterr().err
    spread = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    assert warn_if_degenerate(prompts, spread, "static")["collapsed_share"] == 0.0
    assert capsys.readouterr().err == ""
    # repeated prompts are not a collapse: only distinct prompts are compared
    assert degeneracy(["a", "a", "b"], np.array([[1, 0], [1, 0], [0, 1]], np.float32))["collapsed_share"] == 0


def test_shared_preambles_are_found_stripped_recorded_and_stripped_again_by_serving(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from policies.predictors.featurizers import PreambleStripping, find_preambles, strip_preamble
    from policies.tuning.embed import StaticEncoder, degeneracy, embed

    shots = "Answer like the examples.\n" + "".join(f"Q: what is {i} plus {i}? A: {2 * i}.\n" for i in range(30))
    questions = [f"Q: {w} is the capital of which country? A:" for w in ("Paris", "Lima", "Oslo", "Rome")]
    prompts = [shots + q for q in questions] + ["a prompt without the preamble"]
    pre = find_preambles(prompts)
    assert pre == [shots]  # cut at a line break, shared by 4 of 5
    assert strip_preamble(prompts[1], pre) == questions[1]
    assert strip_preamble("short", pre) == "short"
    assert find_preambles(["Write a function that adds", "Write a function that sorts"]) == []  # too short

    feat = StaticEmbedder(tiny_static(tmp_path / "feat", max_tokens=512))
    whole = feat.embed(prompts)
    assert degeneracy(prompts[:4], whole[:4])["collapsed_share"] == 1.0  # the block drowns the question
    stripped = embed(prompts, StaticEncoder(feat.path), use_cache=False)
    assert "1 shared preamble" in capsys.readouterr().err
    assert degeneracy(prompts[:4], stripped[:4])["collapsed_share"] == 0.0

    pred = KNNPredictor(k=2).fit(stripped, {"a": np.array([1.0, 0.0, 1.0, 0.0, 1.0])})
    art = pred.save(tmp_path / "art")
    record(art, "static", feat, preambles=pre)
    served = embedder_for(art)
    assert isinstance(served, PreambleStripping) and served.dim == 16
    assert np.allclose(served.embed_one(prompts[2]), stripped[2], atol=1e-6)  # serving = offline

