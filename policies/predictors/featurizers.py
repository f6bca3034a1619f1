"""Which featurizer a trained predictor needs, and building it: `minilm` (the packaged sentence model)
or `static` (token vectors distilled from it, static_embed.py), both with the Embedder interface
(`embed(prompts) -> (n, d)` unit float32 rows, `embed_one(prompt)`, `dim`, `load()`).

A predictor's weights only make sense on the features it was trained on, so `tune train` records the
featurizer beside the artifact (`featurizer.json`: name, dimension, the static build's path and hash)
and serving builds the same one (`embedder_for`). An artifact without the file predates this and was
trained on MiniLM. A cluster.yaml `encoder:` that contradicts the record fails the start. The record
also lists the shared preambles (few-shot blocks) stripped from the training prompts; serving strips
them too (`find_preambles`, `strip_preamble` below).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENCODERS = ("minilm", "static")
RECORD = "featurizer.json"


def make_embedder(
    encoder: str,
    *,
    path: str | Path | None = None,
    cache_size: int = 4096,
    cache_bytes: int = 16 << 20,
    threads: int | None = 1,
) -> Any:
    """A fresh (not yet loaded) embedder for `encoder`; `path` = a static build other than the default."""
    if encoder == "minilm":
        from policies.predictors.embed import Embedder

        return Embedder(cache_size=cache_size, threads=threads, cache_bytes=cache_bytes)
    if encoder == "static":
        from policies.predictors.static_embed import StaticEmbedder

        return StaticEmbedder(path, cache_size=cache_size, cache_bytes=cache_bytes)
    raise ValueError(f"unknown encoder {encoder!r}; choose from {list(ENCODERS)}")


def record(artifact: str | Path, encoder: str, embedder: Any = None, preambles: Any = ()) -> Path:
    """Write `featurizer.json` into a predictor artifact directory (`tune train` calls this);
    `preambles`: the shared prefixes the training embeddings were computed without."""
    if encoder not in ENCODERS:
        raise ValueError(f"a served predictor needs one of {list(ENCODERS)}, not {encoder!r}")
    emb = embedder or make_embedder(encoder)
    info: dict[str, Any] = {"encoder": encoder, "preambles": list(preambles)}
    if encoder == "static":
        from policies.predictors.static_embed import default_path

        emb.load()
        # The default build is found where the serving host keeps its cache; the hash pins the build.
        where = None if emb.path == default_path() else str(emb.path)
        info.update(path=where, dim=emb.dim, sha256=emb.meta.get("sha256"))
    else:
        info["dim"] = getattr(emb, "dim", None)
    out = Path(artifact) / RECORD
    out.write_text(json.dumps(info, indent=2))
    return out


def recorded(artifact: str | Path) -> dict[str, Any]:
    """The featurizer an artifact was trained on ({"encoder": "minilm"} for artifacts without a record)."""
    f = Path(artifact) / RECORD
    if not f.is_file():
        return {"encoder": "minilm"}
    info = json.loads(f.read_text())
    if info.get("encoder") not in ENCODERS:
        raise ValueError(f"{f}: unknown encoder {info.get('encoder')!r}")
    return info  # type: ignore[no-any-return]


def embedder_for(
    artifact: str | Path,
    encoder: str | None = None,
    *,
    cache_size: int = 4096,
    threads: int | None = 1,
) -> Any:
    """The embedder serving must use for `artifact`; `encoder` (from config) must agree with the record."""
    info = recorded(artifact)
    if encoder is not None and encoder != info["encoder"]:
        raise ValueError(
            f"quality.encoder is {encoder!r} but the artifact {artifact} was trained on "
            f"{info['encoder']!r} features ({RECORD}); retrain with `--encoder {encoder}` or drop the field"
        )
    emb = make_embedder(info["encoder"], path=info.get("path"), cache_size=cache_size, threads=threads)
    want = info.get("sha256")
    if want and info["encoder"] == "static":
        emb.load()
        if emb.meta.get("sha256") != want:
            raise ValueError(
                f"the static featurizer at {emb.path} is not the build {artifact} was trained on "
                f"(sha256 {str(emb.meta.get('sha256'))[:12]} vs {str(want)[:12]}); retrain the predictor"
            )
    return PreambleStripping(emb, info["preambles"]) if info.get("preambles") else emb


# -- shared preambles ------------------------------------------------------------------------------
# A set whose prompts all start with the same few-shot block: a mean of token rows is dominated by the
# block, and MiniLM's 256-token window sees nothing else (issue 13: one vector for 1,456 prompts). The
# tuning lab finds such blocks per dataset, embeds what follows them, and records them in the artifact;
# serving strips the same blocks before featurizing.
PREAMBLE_MIN_CHARS = 200  # ~50 tokens: shorter shared openings ("Q: ", "Write a function") stay
PREAMBLE_MIN_SHARE = 0.25


def _boundary(prefix: str) -> str:
    """Cut a shared prefix back to its last line break (else space), so no word is split."""
    cut = prefix.rfind("\n")
    if cut < len(prefix) // 2:
        cut = max(cut, prefix.rfind(" "))
    return prefix[: cut + 1] if cut >= 0 else ""


def find_preambles(prompts: list[str], min_chars: int = PREAMBLE_MIN_CHARS,
                   min_share: float = PREAMBLE_MIN_SHARE, most: int = 4) -> list[str]:
    """Long prefixes shared by at least `min_share` of the prompts (up to `most`, longest first found)."""
    import os
    from math import ceil

    found: list[str] = []
    rest = sorted(set(prompts))
    need = max(2, ceil(min_share * len(rest)))
    for _ in range(most):
        if len(rest) < need:
            break
        best = ""
        for i in range(len(rest) - need + 1):  # sorted: a window's first and last bound its common prefix
            p = os.path.commonprefix([rest[i], rest[i + need - 1]])
            if len(p) > len(best):
                best = p
        best = _boundary(best)
        if len(best) < min_chars:
            break
        found.append(best)
        rest = [p for p in rest if not p.startswith(best)]
    return found


def strip_preamble(prompt: str, preambles: list[str] | tuple[str, ...]) -> str:
    """The prompt after the longest recorded preamble it starts with (unchanged if none, or if nothing
    would be left)."""
    best = max((p for p in preambles if prompt.startswith(p) and len(prompt) > len(p)), key=len, default="")
    return prompt[len(best):] if best else prompt


class PreambleStripping:
    """Embedder wrapper: strips the recorded preambles, then featurizes (same interface)."""

    def __init__(self, inner: Any, preambles: list[str]) -> None:
        self.inner, self.preambles = inner, list(preambles)

    def __getattr__(self, name: str) -> Any:  # dim, load, loaded, path, meta, cache ...
        return getattr(self.inner, name)

    def embed(self, prompts: Any, *args: Any, **kw: Any) -> Any:
        return self.inner.embed([strip_preamble(p, self.preambles) for p in prompts], *args, **kw)

    def embed_one(self, prompt: str) -> Any:
        return self.inner.embed_one(strip_preamble(prompt, self.preambles))
