"""TargetClient over a Serve deployment handle (a RouterLLMServer; a provider behind a deployment only in
benchmarks/provider_hop.py), and both ends of the stream protocol across that handle.

Both deployment kinds expose the same `complete(endpoint, body)` / `stream(endpoint, body)` methods, so
one small adapter serves both; only plain dicts (and lists of them) cross the handle.

Stream batching: every object a replica's stream yields is a Ray object (pickled, reported to the caller,
fetched, unpickled: a fixed cost per object on both sides). So a model replica's `stream` is wrapped in
`batch_stream`: chunks go out one by one, at once, until the first that carries output (text, a tool
call); after it, the chunks produced while the previous object was being sent travel together as one
list, at most one object per `interval_ms` per stream (ROUTER_STREAM_BATCH_MS, default
`DEFAULT_BATCH_MS`; "off" yields every chunk alone as before). A chunk is never held longer than that
interval, the last ones not at all. `HandleClient.stream` unpacks lists, so its callers (Relay,
continuation, usage, error-event detection) see the same chunk sequence as without batching; a plain
dict is one chunk (what an unbatched deployment yields).

Cancellation: Serve cancels a child call only when the parent request is cancelled. When the router
stops waiting for one attempt of a request that goes on (attempt timeout, failover, an escalation
that is abandoned), nothing cancels the child, and the engine would keep generating for no one. So
every exit that does not consume the call to its end cancels it here (`DeploymentResponse.cancel()`:
unassigned calls are dropped from the queue, assigned ones are `ray.cancel`led in the replica, which
raises CancelledError inside the engine's coroutine or generator; `batch_stream` passes that on to the
engine's generator, whichever task is reading it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

logger = logging.getLogger(__name__)

BATCH_ENV = "ROUTER_STREAM_BATCH_MS"
DEFAULT_BATCH_MS = 5.0  # see BENCHMARKS.md "Streaming" for the measurement behind it

Chunk = dict[str, Any]


def batch_interval_ms(value: str | None = None) -> float | None:
    """The stream batching interval from ROUTER_STREAM_BATCH_MS (or `value`): None means no batching."""
    raw = (os.environ.get(BATCH_ENV) if value is None else value) or ""
    raw = raw.strip().lower()
    if raw in ("off", "none", "no", "false"):
        return None
    if not raw:
        return DEFAULT_BATCH_MS
    ms = float(raw)
    if ms < 0:
        raise ValueError(f"{BATCH_ENV} must be >= 0 or 'off', got {raw!r}")
    return ms


def carries_output(chunk: Chunk) -> bool:
    """True for a chunk with generated output (the role-only first chunk of a chat stream has none)."""
    for choice in chunk.get("choices") or ():
        if choice.get("text"):
            return True
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            return True
    return False


async def _close_source(source: AsyncIterator[Chunk]) -> None:
    """End a source generator that is still suspended, with CancelledError as Serve would (the engines'
    generators abort their request on it)."""
    if getattr(source, "ag_frame", None) is None or getattr(source, "ag_running", False):
        return
    try:
        await source.athrow(asyncio.CancelledError())  # type: ignore[attr-defined]
    except (StopAsyncIteration, asyncio.CancelledError):
        pass
    except Exception:
        logger.debug("closing a stream source failed", exc_info=True)
    with contextlib.suppress(Exception):
        await source.aclose()  # type: ignore[attr-defined]


async def _pump(source: AsyncIterator[Chunk], buf: list[Chunk], wake: asyncio.Event) -> None:
    try:
        async for chunk in source:
            buf.append(chunk)
            wake.set()
    finally:
        wake.set()


async def batch_stream(source: AsyncIterator[Chunk], interval_ms: float | None,
                       alone: Callable[[Chunk], bool] = carries_output) -> AsyncGenerator[Chunk | list[Chunk], None]:
    """The replica end: `source`'s chunks, those after the first output chunk grouped into lists (see the
    module docstring). An error the source raises comes after every chunk it yielded before it."""
    pump: asyncio.Task[None] | None = None
    try:
        if interval_ms is None:
            async for chunk in source:
                yield chunk
            return
        async for chunk in source:  # until the first output: one by one, nothing held
            yield chunk
            if alone(chunk):
                break
        else:
            return
        interval_s = interval_ms / 1000
        loop = asyncio.get_running_loop()
        buf: list[Chunk] = []
        wake = asyncio.Event()
        pump = asyncio.create_task(_pump(source, buf, wake))
        last = loop.time()
        while True:
            await wake.wait()
            if interval_s and not pump.done():
                hold = last + interval_s - loop.time()
                if hold > 0:  # collect what arrives meanwhile; the source's end flushes at once
                    await asyncio.wait({pump}, timeout=hold)
            wake.clear()
            items, buf[:] = buf[:], []
            if items:
                yield items[0] if len(items) == 1 else items
                last = loop.time()
            if pump.done() and not buf:
                pump.result()  # the source's error, after the chunks it yielded before it
                return
    finally:
        if pump is not None:
            if not pump.done():
                pump.cancel()  # CancelledError inside the source, where the pump awaits it
                await asyncio.wait({pump})
            if not pump.cancelled():
                pump.exception()  # retrieved (raised above, or moot once the consumer left)
        await _close_source(source)


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
        """The ingress end: one chunk per item, batches (lists) unpacked in order."""
        response = self._stream.remote(endpoint, body)
        done = False
        try:
            async for item in response:
                if type(item) is list:
                    for chunk in item:
                        yield chunk
                else:
                    yield item
            done = True
        finally:
            if not done:  # closed early (aclose), cancelled or failed mid-stream
                _cancel(response)
