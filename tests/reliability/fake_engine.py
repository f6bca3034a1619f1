"""The reliability suite's fake engine lives in tests/support/fake_engine.py (shared with the benchmarks)."""

from __future__ import annotations

from tests.support.fake_engine import FakeEngine, FakeEngineReplica

__all__ = ["FakeEngine", "FakeEngineReplica"]
