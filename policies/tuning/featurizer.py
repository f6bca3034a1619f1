"""`routerctl tune featurizer build`: distil the packaged all-MiniLM-L6-v2 into the `static` featurizer.

The model2vec recipe (Tulkens & van Dongen, 2024), re-done here in numpy + torch from what is
installed, no hub:
  1. every vocabulary token is embedded by the model on its own ([CLS] token [SEP], mean-pooled like
     the sentence model pools), 30,522 rows of 384;
  2. PCA to `dim` components (centred: the direction every token shares says nothing about a prompt
     and would dominate a mean of rows);
  3. each row is weighted by a smooth inverse frequency, w = a / (a + p(token)), with p from Zipf's
     law over the vocabulary's order (WordPiece vocabularies list frequent words first), so "the" and
     "," count little in a prompt's mean. Special and [unused] tokens get weight 0.
The artifact (policies/predictors/static_embed.py documents its files) goes to
$ROUTER_CACHE_DIR/featurizers/static-minilm-d256 unless `--out` says otherwise; a build whose
inputs (model files, parameters) match an existing artifact is skipped unless `--force`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = "model2vec-style: token-alone MiniLM, mean-pooled; centred PCA; Zipf SIF weights"


def _inputs_key(model_dir: Path, params: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        f = model_dir / name
        if f.exists():
            st = f.stat()
            h.update(f"{name}:{st.st_size}".encode())
    return h.hexdigest()[:16]


def token_vectors(model_dir: Path, batch: int = 1024, progress: bool = True) -> np.ndarray:
    """(vocab, 384) float32: each token embedded alone by the model, mean-pooled over its 3 positions."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    vocab = tok.vocab_size
    cls, sep = tok.cls_token_id, tok.sep_token_id
    out = np.empty((vocab, model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, vocab, batch), desc="embedding the vocabulary", unit="batch",
                      file=sys.stderr, disable=not progress):
            ids = torch.arange(s, min(s + batch, vocab)).unsqueeze(1)
            seq = torch.cat([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = model(input_ids=seq, attention_mask=torch.ones_like(seq)).last_hidden_state
            out[s:s + len(ids)] = hidden.mean(1).numpy()
    return out


def zipf_weights(vocab: dict[str, int], sif: float) -> np.ndarray:
    """w = sif / (sif + p(rank)), p Zipfian over the real tokens in id order; specials get 0."""
    n = max(vocab.values()) + 1
    real = np.zeros(n, dtype=bool)
    for t, i in vocab.items():
        real[i] = not (t.startswith("[") and t.endswith("]"))
    rank = np.cumsum(real)  # 1-based rank among real tokens
    p = np.where(real, 1.0 / np.maximum(rank, 1), 0.0)
    p /= p.sum()
    return np.where(real, sif / (sif + p), 0.0).astype(np.float32)


def build(out: Path, dim: int = 256, sif: float = 1e-3, max_tokens: int = 256,
          model_dir: Path | None = None, force: bool = False, progress: bool = True) -> dict[str, Any]:
    from policies.predictors.embed import packaged_model_dir
    from policies.predictors.static_embed import FORMAT, META, TOKENIZER, VECTORS

    src = Path(model_dir) if model_dir else packaged_model_dir()
    params = {"dim": dim, "sif": sif, "max_tokens": max_tokens, "recipe": RECIPE}
    key = _inputs_key(src, params)
    if not force and (out / META).is_file():
        meta = json.loads((out / META).read_text())
        if meta.get("inputs_key") == key and (out / VECTORS).is_file():
            return {**meta, "path": str(out), "skipped": True}
    t0 = time.perf_counter()
    # The model pass is the slow step (~1 min) and depends on the model only: keep it for rebuilds
    # with other parameters.
    raw_path = out.parent / f".token-vectors-{_inputs_key(src, {})}.npy"
    if raw_path.is_file() and not force:
        raw = np.load(raw_path)
    else:
        raw = token_vectors(src, progress=progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(raw_path, raw)
    vocab = json.loads((src / "tokenizer.json").read_text())["model"]["vocab"]
    w = zipf_weights(vocab, sif)
    use = w > 0
    centred = raw - raw[use].mean(0)
    # PCA by SVD of the real tokens' rows; components ordered by explained variance.
    _, svals, vt = np.linalg.svd(centred[use], full_matrices=False)
    dim = min(dim, vt.shape[0])
    vectors = (centred @ vt[:dim].T) * w[:, None]
    explained = float((svals[:dim] ** 2).sum() / (svals ** 2).sum())
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (VECTORS + ".tmp.npy")
    np.save(tmp, vectors.astype(np.float32))
    os.replace(tmp, out / VECTORS)
    shutil.copyfile(src / "tokenizer.json", out / TOKENIZER)
    sha = hashlib.sha256((out / VECTORS).read_bytes()).hexdigest()
    meta = {"format": FORMAT, "kind": "static", "dim": dim, "max_tokens": max_tokens, "sif": sif,
            "vocab": int(vectors.shape[0]), "source": str(src), "recipe": RECIPE,
            "pca_explained_variance": round(explained, 4), "inputs_key": key, "sha256": sha,
            "build_s": round(time.perf_counter() - t0, 1)}
    (out / META).write_text(json.dumps(meta, indent=2))
    return {**meta, "path": str(out), "skipped": False}


def cmd_featurizer(args: argparse.Namespace) -> int:
    from policies.predictors.static_embed import default_path
    from policies.tuning.cli import _emit

    out = Path(args.out).expanduser() if args.out else default_path()
    info = build(out, dim=args.dim, sif=args.sif, max_tokens=args.max_tokens, force=args.force,
                 progress=not args.json)
    state = "up to date" if info["skipped"] else f"built in {info['build_s']} s"
    _emit(args, info, f"static featurizer {info['path']} ({state}): {info['vocab']} tokens x "
                      f"{info['dim']} dims, last {info['max_tokens']} tokens of a prompt; use it with "
                      f"`--encoder static` (tune) and `encoder: static` (cluster.yaml quality)")
    return 0


def add_parser(sub: Any) -> None:
    """`tune featurizer build` (wired into policies/tuning/cli.py's register)."""
    p = sub.add_parser("featurizer", help="build the fast static featurizer from the packaged MiniLM",
                       description="Fast prompt featurizers for the request path.")
    fsub = p.add_subparsers(dest="featurizer_command", metavar="{build}")
    fsub.required = True
    b = fsub.add_parser("build", help="distil all-MiniLM-L6-v2 into static token vectors (~1-2 min)",
                        description=__doc__)
    b.add_argument("--out", default=None, help="artifact directory (default: the cache, where "
                   "`encoder: static` looks)")
    b.add_argument("--dim", type=int, default=256, help="PCA components kept")
    b.add_argument("--sif", type=float, default=1e-3, help="smooth-inverse-frequency coefficient")
    b.add_argument("--max-tokens", type=int, default=256, help="tokens of a prompt's end that count")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_featurizer)
