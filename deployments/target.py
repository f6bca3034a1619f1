"""Historic home of the `TargetClient` protocol; it lives in deployments/contracts.py now."""

from __future__ import annotations

from deployments.contracts import TargetClient

__all__ = ["TargetClient"]
