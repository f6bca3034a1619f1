"""Which featurizer a trained predictor needs, and building it: `minilm` (the packaged sentence model)
or `static` (token vectors distilled from it, static_embed.py), both with the Embedder interface
(`embed(prompts) -> (n, d)` unit float32 rows, `embed_one(prompt)`, `dim`, `load()`).

A predictor's weights only make sense on the features it was trained on, so `tune train` records the
featurizer beside the artifact (`featurizer.json`: name, dimension, the static build's path and hash)
and serving builds the same one (`embedder_for`). An artifact without the file predates this and was
trained on MiniLM. A cluster.yaml `encoder:` that contradicts the record fails the start.
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


def record(artifact: str | Path, encoder: str, embedder: Any = None) -> Path:
    """Write `featurizer.json` into a predictor artifact directory (`tune train` calls this)."""
    if encoder not in ENCODERS:
        raise ValueError(f"a served predictor needs one of {list(ENCODERS)}, not {encoder!r}")
    emb = embedder or make_embedder(encoder)
    info: dict[str, Any] = {"encoder": encoder}
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
    return emb
