"""Import layering (DESIGN.md "Import rules"), read from the source so lazy imports inside functions count:

- policies/ imports no Ray and nothing of router/ or deployments/ (pure Python, testable without Ray);
- deployments/ imports nothing of router/ (targets do not depend on the ingress);
- deployments/contracts.py, the bottom of the graph, imports nothing of router/, deployments/, policies/;
- serving code (router/, deployments/, policies/ outside tuning) never imports policies.tuning; the
  console script (router/cli.py, `routerctl tune ...`) is not serving code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _hits(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [  # file names suffice: the rules are per package
        f"{f.name} imports {m}"
        for f in files
        for m in _imports(f)
        if any(m == b or m.startswith(b + ".") for b in banned)
    ]


def test_import_scanner_sees_lazy_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from ray import serve\n    import router.errors\n")
    assert _imports(f) == ["ray", "router.errors"]
    assert len(_hits([f], ("ray", "router"))) == 2 and _hits([f], ("rout",)) == []


def test_policies_import_no_ray_router_or_deployments() -> None:
    assert _hits(_files("policies"), ("ray", "router", "deployments")) == []


def test_deployments_import_nothing_of_router() -> None:
    assert _hits(_files("deployments"), ("router",)) == []


def test_contracts_sit_at_the_bottom() -> None:
    assert _hits([ROOT / "deployments" / "contracts.py"], ("router", "deployments", "policies", "ray")) == []


@pytest.mark.parametrize("package", ["router", "deployments", "policies"])
def test_serving_code_never_imports_tuning(package: str) -> None:
    cli = ROOT / "router" / "cli.py"
    files = [f for f in _files(package) if "tuning" not in f.relative_to(ROOT).parts and f != cli]
    assert _hits(files, ("policies.tuning",)) == []
