"""Cross-checks of a cluster.yaml whose models run as applications of their own (`routerctl check`).

Each router model entry that names `app:` must have that application in the same file, built by
`router.app:build_model`, with args equal to the entry's engine part (cluster.yaml merges one YAML anchor
into both, so they agree unless someone overrides a field on one side), and no HTTP route of its own.
Every model application must be used by a router entry (else it would hold an engine nobody calls).
"""

from __future__ import annotations

from typing import Any

from router.config import AppConfig

MODEL_IMPORT_PATH = "router.app:build_model"


def model_app_problems(apps: list[Any], routers: dict[int, AppConfig], require_prepared: bool) -> list[str]:
    from deployments.local_config import EngineConfig
    from router.app import parse_engine
    from router.validate import ConfigError, engine_source_problems

    engines: dict[str, tuple[int, EngineConfig | None]] = {}
    problems: list[str] = []
    for k, app in enumerate(apps):
        if not isinstance(app, dict) or app.get("import_path") != MODEL_IMPORT_PATH:
            continue
        prefix = f"applications[{k}].args"
        if app.get("route_prefix", "/") is not None:
            problems.append(f"applications[{k}].route_prefix: set it to null: a model application is called "
                            "by the router, not over HTTP")
        try:
            engine = parse_engine(app.get("args"), prefix)
        except ConfigError as e:
            problems += e.problems
            engines[str(app.get("name"))] = (k, None)
            continue
        problems += engine_source_problems(engine, prefix, require_prepared)
        engines[str(app.get("name"))] = (k, engine)

    used: set[str] = set()
    for i, cfg in routers.items():
        for j, m in enumerate(cfg.models):
            if m.app is None:
                continue
            used.add(m.app)
            where = f"applications[{i}].args.models[{j}].app"
            if m.app not in engines:
                problems.append(f"{where}: no application named '{m.app}' with import_path "
                                f"'{MODEL_IMPORT_PATH}' in this file")
                continue
            k, engine = engines[m.app]
            if engine is None:
                continue
            mine, theirs = m.engine().model_dump(), engine.model_dump()
            diff = sorted(f for f in mine if mine[f] != theirs[f])
            if diff:
                problems.append(f"applications[{i}].args.models[{j}]: engine settings differ from application "
                                f"'{m.app}' (applications[{k}].args): {', '.join(diff)}")
    for name, (k, _) in engines.items():
        if name not in used:
            problems.append(f"applications[{k}]: model application '{name}' is not used by the router "
                            f"(give its entry in the router's models `app: {name}`)")
    return problems
