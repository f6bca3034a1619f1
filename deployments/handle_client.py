"""TargetClient over a Serve deployment handle (a RouterLLMServer or a ProviderDeployment).

Both deployment kinds expose the same `complete(endpoint, body)` / `stream(endpoint, body)` methods, so
one small adapter serves both; only plain dicts cross the handle.

Cancellation: Serve cancels a child call only when the parent request is cancelled. When the router
stops waiting for one attempt of a request that goes on (attempt timeout, failover, an escalation
that is abandoned), nothing cancels the child, and the engine would keep generating for no one. So
every exit that does not consume the call to its end cancels it here (`DeploymentResponse.cancel()`:
unassigned calls are dropped from the queue, assigned ones are `ray.cancel`led in the replica, which
raises CancelledError inside the engine's coroutine or generator).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

logger = logging.getLogger(__name__)


def _cancel(response: Any) -> None:
    try:
        response.cancel()
    except Exception:  # best effort: a call that already finished or whose replica died
        logger.debug("cancelling a handle call failed", exc_info=True)


async def call_with_timeout(method: Any, timeout_s: float, *args: Any) -> Any:
    """`await method.remote(*args)` for at most `timeout_s` (TimeoutError after), cancelled on expiry."""
    response = method.remote(*args)
    try:
        async with asyncio.timeout(timeout_s):
            return await response
    except BaseException:
        _cancel(response)
        raise


class HandleClient:
    def __init__(self, handle: Any) -> None:
        self._complete = handle.complete
        self._stream = handle.options(stream=True).stream

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._complete.remote(endpoint, body)
        done = False
        try:
            result = await response
            done = True
            return result
        finally:
            if not done:  # cancelled (timeout, caller gone) or failed: make sure it stops upstream
                _cancel(response)

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        response = self._stream.remote(endpoint, body)
        done = False
        try:
            async for chunk in response:
                yield chunk
            done = True
        finally:
            if not done:  # closed early (aclose), cancelled or failed mid-stream
                _cancel(response)
