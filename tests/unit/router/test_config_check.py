"""`routerctl check`: valid configs pass; broken ones exit 1 with messages naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.cli import main
from router.validate import ConfigError, parse_args

ROOT = Path(__file__).resolve().parents[3]


def _cluster() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _check(tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["check", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, out.get("problems", [])


@pytest.mark.parametrize("name", ["cluster.yaml", "examples/gpu-cluster.yaml"])
def test_shipped_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / name), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["apps"][0]["models"]


def _args(data: dict[str, Any]) -> dict[str, Any]:
    return data["applications"][0]["args"]


def _both(data: dict[str, Any], i: int, **fields: Any) -> None:
    """Change an engine field as cluster.yaml's anchor would: in the router's entry and the model's app."""
    entry = _args(data)["models"][i]
    entry.update(fields)
    (app,) = [a for a in data["applications"] if a["name"] == entry["app"]]
    app["args"] = {**app["args"], **fields}


BROKEN = [
    ("unknown model field", lambda a: a["models"][0].update(contxt_window=10), "args.models[0].contxt_window"),
    ("context too small", lambda a: a["models"][1].update(context_window=8), "args.models[1].context_window"),
    ("duplicate ids", lambda a: a["models"][1].update(id="smollm2-135m"), "repeated: smollm2-135m"),
    ("unknown policy", lambda a: a.update(policy={"name": "cheapest"}), "args.policy"),
    ("policy names unknown target", lambda a: a.update(policy={"name": "always", "target": "gpt-9"}), "gpt-9"),
    ("bad provider url", lambda a: a["providers"][0].update(base_url="ftp://x"), "args.providers[0].base_url"),
    ("negative price", lambda a: a["models"][0].update(output_price_per_mtok=-1), "output_price_per_mtok"),
    ("cpu with tensor parallel", lambda a: a["models"][0].update(tensor_parallel_size=2), "args.models[0]"),
    ("price and hourly cost", lambda a: a["models"][0].update(hourly_cost_usd=1.0, throughput_tok_s=10), "not both"),
    ("no targets", lambda a: (a.update(models=[]), a.update(providers=[])), "at least one model or provider"),
]


@pytest.mark.parametrize(("label", "mutate", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_configs_name_the_field(label, mutate, expected, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(_cluster())
    mutate(_args(data))
    code, problems = _check(tmp_path, data, capsys)
    assert code == 1
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("source", "expected"), [("package:no_such_pkg_xyz", "no_such_pkg_xyz"),
                                                  ("/nonexistent/model", "no such file")])
def test_missing_model_source_is_named_at_its_application(source, expected, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _cluster()
    _both(data, 0, source=source)
    code, problems = _check(tmp_path, data, capsys)
    assert code == 1
    assert any(p.startswith("applications[1].args.source") and expected in p for p in problems), problems


LAYOUT = [
    ("engine differs from its app", lambda d: _args(d)["models"][1].update(context_window=4096),
     "applications[0].args.models[1]: engine settings differ from application 'model-gemma3-270m'"),
    ("app missing", lambda d: d["applications"].pop(2), "models[1].app: no application named 'model-gemma3-270m'"),
    ("app unused", lambda d: _args(d)["models"][1].pop("app"), "model application 'model-gemma3-270m' is not used"),
    ("model app on http", lambda d: d["applications"][1].update(route_prefix="/m"), "applications[1].route_prefix"),
    ("routing field in model app", lambda d: d["applications"][1].update(
        args={**d["applications"][1]["args"], "quality_prior": 0.9}), "applications[1].args.quality_prior"),
    ("two models one app", lambda d: _args(d)["models"][1].update(app="model-smollm2-135m"),
     "shared: model-smollm2-135m"),
]


@pytest.mark.parametrize(("label", "mutate", "expected"), LAYOUT, ids=[b[0] for b in LAYOUT])
def test_model_applications_are_cross_checked(label, mutate, expected, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _cluster()
    mutate(data)
    code, problems = _check(tmp_path, data, capsys)
    assert code == 1
    assert any(expected in p for p in problems), problems


def test_router_only_fields_are_not_engine_args() -> None:
    # What restarts what: a model application's args (its Serve version) hold only the engine part, so a
    # changed price or prior, which lives only in the router's entry, cannot restart the engine.
    data = _cluster()
    apps = {a["name"]: a for a in data["applications"]}
    for m in _args(data)["models"]:
        engine = apps[m["app"]]["args"]
        assert {k: v for k, v in m.items() if k in engine} == engine
        assert not {"input_price_per_mtok", "quality_prior", "latency", "app"} & set(engine)


def test_serve_schema_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _cluster()
    data["http_options"]["port"] = "eighty"
    code, problems = _check(tmp_path, data, capsys)
    assert code == 1 and any("port" in p for p in problems)


def test_invalid_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications: [\n")
    assert main(["check", str(bad)]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "none.yaml")]) == 1


def test_env_expansion_in_provider_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cfg = parse_args(_args(_cluster()))
    assert cfg.providers[0].base_url == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert parse_args(_args(_cluster())).providers[0].base_url == "https://api.openai.com/v1"


def test_build_refuses_before_starting_anything(tmp_path: Path) -> None:
    # A missing model is reported by the builder in the `serve run` process, before any deployment:
    # by the router's builder for a model bound in its app, by the model's own builder otherwise.
    from router.app import build, build_model

    data = _cluster()
    args = _args(data)
    args["models"][0]["source"] = str(tmp_path / "missing")
    args["models"][0].pop("app")
    with pytest.raises(ConfigError, match=r"args.models\[0\].source"):
        build(args)
    with pytest.raises(ConfigError, match=r"args.source"):
        build_model({**data["applications"][1]["args"], "source": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"args.quality_prior"):
        build_model({**data["applications"][1]["args"], "quality_prior": 0.5})


def test_gpu_example_derives_prices_from_hardware_cost() -> None:
    data = yaml.safe_load((ROOT / "examples/gpu-cluster.yaml").read_text())
    cfg = parse_args(_args(data))
    small, big = cfg.targets()[:2]
    assert 0 < small.output_price_per_mtok < big.output_price_per_mtok
    assert [t.kind for t in cfg.targets()] == ["local", "local", "api", "api"]


def test_builders_take_exactly_one_parameter() -> None:
    # `serve run` / `serve deploy` refuse a builder whose signature has any other parameter count
    # (ray/serve/_private/api.py call_user_app_builder_with_args_if_necessary).
    import inspect

    from router.app import build, build_model

    for builder in (build, build_model):
        assert len(inspect.signature(builder).parameters) == 1, builder.__name__
