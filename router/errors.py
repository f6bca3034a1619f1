"""The router's error tree: defined in deployments/contracts.py (the module both router/ and deployments/
import) and re-exported here under its historic name, so `from router.errors import ...` keeps working.

Each error carries its HTTP status, an OpenAI-style `type` and a short `code`; router.api translates
them to HTTP in one place. Messages name what is wrong and never contain secrets or prompt text.
"""

from __future__ import annotations

from deployments.contracts import (
    BadGateway,
    BadRequest,
    BudgetExhausted,
    ClientError,
    Forbidden,
    InternalError,
    NoHealthyTarget,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RouterError,
    StreamInterrupted,
    Unauthorized,
    Unsatisfiable,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)

__all__ = [
    "RouterError",
    "ClientError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Unsatisfiable",
    "RateLimited",
    "BudgetExhausted",
    "UpstreamError",
    "BadGateway",
    "NoHealthyTarget",
    "UpstreamTimeout",
    "UpstreamRejected",
    "UpstreamRateLimited",
    "StreamInterrupted",
    "InternalError",
]
