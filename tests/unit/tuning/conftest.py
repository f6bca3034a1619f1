"""Shared fixtures for the tuning-lab tests: the RouteLLM data path and a private embedding cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ROUTELLM = Path(os.environ.get("ROUTELLM_DATA", ROOT.parent / "shared" / "datasets" / "routellm"))


@pytest.fixture
def routellm() -> Path:
    if not (ROUTELLM / "mmlu").is_dir():
        pytest.skip(f"RouteLLM data not found at {ROUTELLM} (set ROUTELLM_DATA)")
    return ROUTELLM


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTER_CACHE_DIR", str(tmp_path / "cache"))
