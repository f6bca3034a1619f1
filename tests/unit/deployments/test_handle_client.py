"""HandleClient cancels the Serve call whenever the caller stops waiting for it (no Ray: a fake handle)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from deployments.handle_client import HandleClient


class FakeResponse:
    """Stands in for DeploymentResponse / DeploymentResponseGenerator: awaitable, iterable, cancel()."""

    def __init__(self, delay_s: float, chunks: int) -> None:
        self.delay_s, self.chunks, self.cancelled = delay_s, chunks, 0

    def cancel(self) -> None:
        self.cancelled += 1

    def __await__(self) -> Any:
        return asyncio.sleep(self.delay_s, result={"ok": True}).__await__()

    async def _gen(self) -> Any:
        for i in range(self.chunks):
            await asyncio.sleep(self.delay_s)
            yield {"i": i}

    def __aiter__(self) -> Any:
        return self._gen()


class FakeMethod:
    def __init__(self, owner: FakeHandle) -> None:
        self.owner = owner

    def remote(self, *args: Any) -> FakeResponse:
        r = FakeResponse(self.owner.delay_s, self.owner.chunks)
        self.owner.responses.append(r)
        return r


class FakeHandle:
    def __init__(self, delay_s: float = 0.0, chunks: int = 3) -> None:
        self.delay_s, self.chunks = delay_s, chunks
        self.responses: list[FakeResponse] = []
        self.complete = self.stream = FakeMethod(self)

    def options(self, **_: Any) -> FakeHandle:
        return self


async def test_answered_call_is_not_cancelled() -> None:
    h = FakeHandle()
    assert await HandleClient(h).complete("chat", {}) == {"ok": True}
    assert h.responses[0].cancelled == 0


async def test_timed_out_call_is_cancelled_upstream() -> None:
    h = FakeHandle(delay_s=5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(HandleClient(h).complete("chat", {}), 0.01)
    assert h.responses[0].cancelled == 1


async def test_stream_read_to_the_end_is_not_cancelled() -> None:
    h = FakeHandle()
    assert [c["i"] async for c in HandleClient(h).stream("chat", {})] == [0, 1, 2]
    assert h.responses[0].cancelled == 0


async def test_stream_closed_early_is_cancelled_upstream() -> None:
    h = FakeHandle()
    async with contextlib.aclosing(HandleClient(h).stream("chat", {})) as s:
        async for _ in s:
            break
    assert h.responses[0].cancelled == 1


async def test_stream_abandoned_before_first_chunk_is_cancelled_upstream() -> None:
    h = FakeHandle(delay_s=5)
    s = HandleClient(h).stream("chat", {})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(s), 0.01)
    assert h.responses[0].cancelled == 1
