"""Retry timing: exponential backoff with full jitter, and Retry-After parsing (seconds or HTTP date)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timezone
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field


class RetryConfig(BaseModel):
    """How often and how patiently a failed attempt is repeated (only before any output was passed on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Extra attempts after the first on connect errors, timeouts, 5xx, 429.",
    )
    backoff_base_s: float = Field(
        default=0.2,
        gt=0,
        description="Backoff cap for the first retry; doubles per retry (full jitter below it).",
    )
    backoff_max_s: float = Field(
        default=5.0, gt=0, description="Upper bound of any one backoff cap, seconds."
    )
    retry_after_max_s: float = Field(
        default=10.0,
        ge=0,
        description="Longest Retry-After we wait for; a longer one fails at once so the router can "
        "fall back to another target (it is also capped by the request deadline).",
    )


def backoff_s(attempt: int, config: RetryConfig, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog): uniform(0, min(max, base * 2**attempt)); attempt is 0-based."""
    cap = min(config.backoff_max_s, config.backoff_base_s * (2**attempt))
    return rng.uniform(0.0, cap)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date. None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN -> None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now())
