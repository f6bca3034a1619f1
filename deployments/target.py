"""The seam between the ingress and the things that answer: one protocol, two kinds of implementation.

The ingress only ever talks to a `TargetClient`. In Serve, a client wraps a deployment handle (a vLLM
LLMServer or a ProviderDeployment); in unit tests, a deterministic fake. Bodies are plain OpenAI-format
dicts so that only serialisable values cross Ray handles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class TargetClient(Protocol):
    """Calls one target with an OpenAI-format request body (its `model` already set for the target)."""

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming call. endpoint is 'chat' or 'completions'. Returns the OpenAI response dict.

        Raises router.errors.UpstreamError subclasses on failure.
        """
        ...

    def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming call: yields OpenAI chunk dicts; the last chunk carries `usage`.

        Raises router.errors.UpstreamError subclasses; errors before the first chunk are retryable.
        """
        ...
