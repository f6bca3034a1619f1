"""policies/ must import without Ray (and without torch until an embedding is needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import importlib, pkgutil, sys
import policies
# __main__ modules run a CLI when imported: not library code.
names = [m.name for m in pkgutil.walk_packages(policies.__path__, "policies.")
         if not m.name.endswith("__main__")]
for n in names:
    importlib.import_module(n)
bad = sorted(m for m in ("ray", "torch", "transformers") if m in sys.modules)
print(len(names), "modules;", "heavy:", bad)
assert "ray" not in sys.modules, "a module under policies/ imports ray"
"""

ENGINE_ONLY = """
import importlib, pkgutil, sys
import policies
for m in pkgutil.walk_packages(policies.__path__, "policies."):
    if not m.name.startswith("policies.tuning"):
        importlib.import_module(m.name)
heavy = sorted(m for m in ("ray", "torch", "transformers", "sklearn") if m in sys.modules)
assert not heavy, heavy
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_no_module_under_policies_imports_ray():
    r = _run(SCRIPT)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_policy_engine_imports_no_heavy_library():
    r = _run(ENGINE_ONLY)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
