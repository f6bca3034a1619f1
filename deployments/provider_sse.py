"""Server-sent events as OpenAI streams them, and the internal failure record of one attempt.

Per the SSE spec an event is a run of lines ended by a blank line; `data:` lines of one event are
joined with newlines; `:` comments and other fields (event, id, retry) are ignored. The stream ends
with `data: [DONE]`; a stream that stops without it was cut off and counts as broken.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

FailureKind = Literal["timeout", "network", "server", "rate_limited", "rejected", "protocol"]
END: Any = object()  # sentinel for anext(): the stream finished cleanly


class Failure(Exception):
    """One failed attempt, before it is turned into a router.errors.UpstreamError.

    `reason` is ours (status code, exception class name), never provider text.
    """

    def __init__(
        self,
        kind: FailureKind,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
    ):
        super().__init__(reason)
        self.kind, self.reason, self.status = kind, reason, status
        self.retry_after, self.detail = retry_after, detail

    @property
    def retryable(self) -> bool:
        return self.kind != "rejected"

    @property
    def health_failure(self) -> bool:
        """Counts against the breaker: the target is unusable, not just this request refused."""
        return self.kind != "rejected" or self.status in (401, 403)


async def sse_events(lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each event's JSON object; raise Failure on a broken line, an error event or a cut-off."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if line:
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            continue
        if not data:
            continue
        payload, data = "\n".join(data), []
        event = _decode(payload)
        if event is None:
            return
        yield event
    if data:  # last event without its blank line: the connection closed mid-event
        event = _decode("\n".join(data))
        if event is None:
            return
    raise Failure("protocol", "stream ended before [DONE]")


def _decode(payload: str) -> dict[str, Any] | None:
    if payload.strip() == "[DONE]":
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        raise Failure("protocol", "malformed SSE data line") from None
    if not isinstance(event, dict):
        raise Failure("protocol", "SSE event is not a JSON object")
    if "error" in event and "choices" not in event:
        raise Failure("server", "provider sent an error event")
    return event
