"""TargetClient over a Serve deployment handle (a RouterLLMServer or a ProviderDeployment).

Both deployment kinds expose the same `complete(endpoint, body)` / `stream(endpoint, body)` methods, so
one small adapter serves both; only plain dicts cross the handle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


class HandleClient:
    def __init__(self, handle: Any) -> None:
        self._complete = handle.complete
        self._stream = handle.options(stream=True).stream

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._complete.remote(endpoint, body)

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self._stream.remote(endpoint, body):
            yield chunk
