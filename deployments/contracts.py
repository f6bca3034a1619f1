"""The contracts between the ingress (router/) and the targets (deployments/): the bottom of the import graph.

Both sides import this module and it imports nothing of either (tests/unit/test_layering.py enforces
it). It holds the one error tree, each error with its HTTP status, an OpenAI-style `type` and a short
`code` (translated to HTTP in one place, router.api; `router.errors` re-exports it under its old name),
and the `TargetClient` protocol, the one seam between the ingress and whatever answers. Messages name
what is wrong and never contain secrets (API keys) or prompt text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class RouterError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross Ray handles; keep code and headers through pickling.
        return (_rebuild, (type(self), self.message, self.code, self.headers))


def _rebuild(cls: type[RouterError], message: str, code: str, headers: dict[str, str]) -> RouterError:
    return cls(message, code=code, headers=headers)


# -- client errors (4xx) ---------------------------------------------------------------------------
class ClientError(RouterError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BadRequest(ClientError):
    status = 400
    code = "invalid_request"


class Unauthorized(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    type = "permission_error"
    code = "target_not_allowed"


class NotFound(ClientError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class Unsatisfiable(ClientError):
    """No target can meet the constraints and fallback is not allowed."""

    status = 422
    code = "constraints_unsatisfiable"


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class BudgetExhausted(RateLimited):
    code = "budget_exhausted"


# -- upstream errors (5xx) -------------------------------------------------------------------------
class UpstreamError(RouterError):
    """A target failed. `retryable` says whether another target may be tried (nothing streamed yet)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class BadGateway(UpstreamError):
    status = 502
    code = "upstream_error"


class NoHealthyTarget(UpstreamError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_target"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamRejected(UpstreamError):
    """The provider answered 4xx to a request we built: retrying elsewhere will not help."""

    status = 502
    code = "upstream_rejected"
    retryable = False


class UpstreamRateLimited(UpstreamError):
    """The provider answered 429 and its Retry-After is longer than we may wait: try another target."""

    status = 503
    type = "service_unavailable"
    code = "upstream_rate_limited"


class StreamInterrupted(BadGateway):
    """A stream broke after output was passed on (reset, broken SSE line, stall): never retried.

    A subclass, not an instance flag: Ray re-raises handle errors as a class derived from the cause's
    class, so only class attributes (retryable, code) survive the trip through a deployment handle.
    """

    code = "upstream_stream_interrupted"
    retryable = False


class InternalError(RouterError):
    status = 500
    code = "internal_error"


# -- the seam --------------------------------------------------------------------------------------
class TargetClient(Protocol):
    """Calls one target with an OpenAI-format request body (its `model` already set for the target).

    In Serve a client wraps a deployment handle (a vLLM LLMServer) or is a ProviderClient held by the
    ingress; in unit tests, a deterministic fake. Bodies are plain dicts so that only serialisable values cross Ray
    handles. Cancelling the awaiting task, or closing the stream early, must stop the upstream work
    (deployments.handle_client cancels the Serve call): the router relies on it when it gives up on
    an attempt (timeout, failover, client gone).
    """

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming call. endpoint is 'chat' or 'completions'. Returns the OpenAI response dict.

        Raises UpstreamError subclasses on failure.
        """
        ...

    def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming call: yields OpenAI chunk dicts; the last chunk carries `usage`.

        Raises UpstreamError subclasses; errors before the first chunk are retryable.
        """
        ...
