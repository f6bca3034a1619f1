"""router/serve_env.py: the one source of Serve's fast-path settings for `make run`, `make test` and the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from router import serve_env

ROOT = Path(__file__).resolve().parents[3]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in serve_env.DEFAULTS and k != serve_env.OFF_SWITCH}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_apply_fills_in_the_defaults() -> None:
    env: dict[str, str] = {"OTHER": "x"}
    applied = serve_env.apply(env)
    assert applied == serve_env.DEFAULTS
    assert set(serve_env.VARIABLES) <= set(applied)
    assert env["OTHER"] == "x"


def test_a_variable_already_set_wins() -> None:
    k = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
    flipped = "0" if serve_env.DEFAULTS[k] == "1" else "1"
    env = {k: flipped}
    assert serve_env.apply(env)[k] == flipped
    assert env[k] == flipped


def test_the_off_switch_leaves_ray_defaults() -> None:
    env = {serve_env.OFF_SWITCH: "0"}
    assert serve_env.apply(env) == {}
    assert env == {serve_env.OFF_SWITCH: "0"}


def test_a_preset_overrides_everything() -> None:
    env = dict.fromkeys(serve_env.VARIABLES, "1")
    assert serve_env.apply(env, preset="ray") == {**dict.fromkeys(serve_env.VARIABLES, "0"), **serve_env.TUNING}


def test_every_preset_decides_every_variable() -> None:
    for name, preset in serve_env.PRESETS.items():
        assert set(preset) == set(serve_env.VARIABLES), name
        assert set(preset.values()) <= {"0", "1"}, name
    assert serve_env.DEFAULTS == {**serve_env.PRESETS[serve_env.DEFAULT_PRESET], **serve_env.TUNING}


def test_ray_reads_the_defaults_as_meant() -> None:
    """What Serve's own constants say with the defaults applied (catches a renamed or re-derived flag)."""
    code = (
        "from ray.serve._private import constants as c; "
        "print(int(c.RAY_SERVE_THROUGHPUT_OPTIMIZED), int(c.RAY_SERVE_USE_GRPC_BY_DEFAULT), "
        "int(c.RAY_SERVE_ENABLE_DIRECT_INGRESS), int(c.RAY_SERVE_ENABLE_HA_PROXY))"
    )
    r = subprocess.run([sys.executable, "-m", "router.serve_env", sys.executable, "-c", code], cwd=ROOT,
                       env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(zip(serve_env.VARIABLES, r.stdout.split()[-4:], strict=True))
    d = serve_env.DEFAULTS
    want = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": d["RAY_SERVE_THROUGHPUT_OPTIMIZED"],
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": d["RAY_SERVE_USE_GRPC_BY_DEFAULT"],
        # HAProxy implies direct ingress (Ray's constants.py)
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1" if "1" in (d["RAY_SERVE_ENABLE_DIRECT_INGRESS"],
                                                          d["RAY_SERVE_ENABLE_HA_PROXY"]) else "0",
        "RAY_SERVE_ENABLE_HA_PROXY": d["RAY_SERVE_ENABLE_HA_PROXY"],
    }
    assert got == want


def test_the_printed_defaults_are_shell_assignments() -> None:
    r = subprocess.run([sys.executable, "-m", "router.serve_env"], cwd=ROOT, env=_clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert dict(line.split("=", 1) for line in r.stdout.split()) == serve_env.DEFAULTS


def test_make_run_make_test_and_the_suite_share_them() -> None:
    """One source of truth: the Makefile's run and test targets go through the module, and so does the suite."""
    make = (ROOT / "Makefile").read_text()
    targets = {}
    current = None
    for line in make.splitlines():
        if line and not line.startswith(("\t", " ", "#")) and ":" in line:
            current = line.split(":", 1)[0]
        elif line.startswith("\t") and current:
            targets.setdefault(current, []).append(line)
    for t in ("run", "test"):
        assert any("$(SERVE_ENV)" in cmd for cmd in targets[t]), (t, targets.get(t))
    assert "SERVE_ENV := $(BIN)/python -m router.serve_env" in make
    assert "serve_env.apply()" in (ROOT / "tests" / "conftest.py").read_text()
