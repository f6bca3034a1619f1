"""Config validation shared by `routerctl check` and `router.app:build` (nothing here starts Ray)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deployments.prepare import ModelSourceError, is_prepared, prepared_dir, resolve
from router.config import AppConfig, expand_env

APP_IMPORT_PATH = "router.app:build"


class ConfigError(ValueError):
    """A config is invalid; `problems` holds one 'field.path: message' line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid router config:\n  " + "\n  ".join(problems))


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union[")):  # pydantic's internal union labels
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def problems_of(err: ValidationError, prefix: str) -> list[str]:
    return [f"{_loc(prefix, tuple(e['loc']))}: {e['msg']}" for e in err.errors()]


def parse_args(args: dict[str, Any] | None, prefix: str = "args") -> AppConfig:
    """Validate the router app's args (after ${ENV} expansion); raise ConfigError naming fields."""
    try:
        return AppConfig.model_validate(expand_env(args or {}))
    except ValidationError as e:
        raise ConfigError(problems_of(e, prefix)) from None


def model_problems(cfg: AppConfig, prefix: str, require_prepared: bool) -> list[str]:
    """Sources that do not resolve, and (optionally) GGUF sources not converted yet. Models served by an
    application of their own are checked with that application's args (router/layout.py)."""
    out: list[str] = []
    for i, m in enumerate(cfg.models):
        if m.app is None:
            out += engine_source_problems(m, f"{prefix}.models[{i}]", require_prepared, cfg.cache_dir)
    return out


def engine_source_problems(m: Any, prefix: str, require_prepared: bool, cache_dir: str | None = None) -> list[str]:
    """The same for one model entry or model application's args (an EngineConfig)."""
    cache_dir = m.cache_dir or cache_dir
    cache = Path(cache_dir).expanduser() if cache_dir else None
    try:
        r = resolve(m.source, cache)
    except ModelSourceError as e:
        return [f"{prefix}.source: {e}"]
    if require_prepared and r.kind == "gguf" and not is_prepared(prepared_dir(m.id, m.source, cache)):
        return [f"{prefix}.source: model '{m.id}' is not prepared; "
                "run `routerctl prepare-models CONFIG` (make run does it)"]
    return []


def load_serve_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    return data


def check_serve_config(data: dict[str, Any], require_prepared: bool = False) -> list[AppConfig]:
    """Validate a whole Serve config file: the Serve schema, then each router app's args."""
    from ray.serve.schema import ServeDeploySchema  # schema only: importing it starts nothing

    problems: list[str] = []
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as e:
        problems += problems_of(e, "")
    except Exception as e:  # older pydantic-v1 style schema classes
        problems.append(f"(serve config): {e}")
    apps = data.get("applications") or []
    if not isinstance(apps, list) or not apps:
        problems.append("applications: list at least one application")
        raise ConfigError(problems)
    configs: dict[int, AppConfig] = {}
    for i, app in enumerate(apps):
        if not isinstance(app, dict) or app.get("import_path") != APP_IMPORT_PATH:
            continue
        prefix = f"applications[{i}].args"
        try:
            cfg = parse_args(app.get("args"), prefix)
        except ConfigError as e:
            problems += e.problems
            continue
        problems += model_problems(cfg, prefix, require_prepared)
        configs[i] = cfg
    from router.layout import model_app_problems

    problems += model_app_problems(apps, configs, require_prepared)
    if not configs and not problems:
        problems.append(f"applications: no application with import_path '{APP_IMPORT_PATH}'")
    if problems:
        raise ConfigError(problems)
    return list(configs.values())
