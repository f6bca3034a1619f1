"""Stream batching across the Serve handle (deployments/handle_client.py): the replica end `batch_stream`
and the ingress end `HandleClient.stream`, alone and under the router's stream handling (no Ray: an
in-process handle whose stream method is a fake target behind `batch_stream`, as in a model replica)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deployments.contracts import BadGateway
from deployments.handle_client import DEFAULT_BATCH_MS, HandleClient, batch_interval_ms, batch_stream, carries_output
from router.limits import LimitsConfig
from tests.unit.router.fakes import FakeTarget, Rig, chat_body

ROLE = {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def word(i: int) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]}


USAGE = {"id": "c", "choices": [], "usage": {"completion_tokens": 5}}


async def source_of(chunks: list[dict[str, Any]], log: list[str] | None = None,
                    then: BaseException | None = None, hang: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Yields `chunks` with no await between them (all ready at once), then raises `then` or waits."""
    try:
        for c in chunks:
            yield c
        if hang:
            await asyncio.Event().wait()
        if then is not None:
            raise then
    except (asyncio.CancelledError, GeneratorExit) as e:
        if log is not None:
            log.append(type(e).__name__)
        raise


def flat(objects: list[Any]) -> list[dict[str, Any]]:
    return [c for o in objects for c in (o if isinstance(o, list) else [o])]


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [o async for o in agen]


def test_interval_setting() -> None:
    assert batch_interval_ms("off") is None and batch_interval_ms("") == DEFAULT_BATCH_MS
    assert batch_interval_ms("0") == 0.0 and batch_interval_ms("2.5") == 2.5
    with pytest.raises(ValueError):
        batch_interval_ms("-1")


def test_role_and_usage_chunks_carry_no_output() -> None:
    assert not carries_output(ROLE) and not carries_output(USAGE) and carries_output(word(0))
    assert carries_output({"choices": [{"index": 0, "text": "x"}]})
    assert not carries_output({"error": {"message": "x", "code": 500}})


@pytest.mark.parametrize("interval", [0.0, 5.0, 10_000.0])
async def test_first_output_goes_alone_and_later_ready_chunks_travel_together(interval: float) -> None:
    chunks = [ROLE, *(word(i) for i in range(5)), USAGE]
    objects = await asyncio.wait_for(collect(batch_stream(source_of(chunks), interval)), 5)
    # the role chunk and the first word alone, at once; the rest (all ready together) as one list; the
    # end of the source flushes at once even under a 10 s interval (wait_for would fail otherwise)
    assert objects == [ROLE, word(0), [*(word(i) for i in range(1, 5)), USAGE]]
    assert flat(objects) == chunks


async def test_off_sends_every_chunk_alone() -> None:
    chunks = [ROLE, *(word(i) for i in range(5)), USAGE]
    assert await collect(batch_stream(source_of(chunks), None)) == chunks


async def test_a_chunk_arriving_alone_is_sent_unwrapped() -> None:
    async def slow() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield word(i)

    objects = await collect(batch_stream(slow(), 0.0))
    assert flat(objects) == [word(0), word(1), word(2)] and objects[0] == word(0)


async def test_source_error_comes_after_the_chunks_before_it() -> None:
    got: list[Any] = []
    with pytest.raises(BadGateway):
        async for o in batch_stream(source_of([word(0), word(1), word(2)], then=BadGateway("engine")), 0.0):
            got.append(o)
    assert got == [word(0), [word(1), word(2)]]


@pytest.mark.parametrize("read", [1, 2])  # closed in the batched phase, or right after the first output
async def test_closing_cancels_the_source(read: int) -> None:
    log: list[str] = []
    agen = batch_stream(source_of([ROLE, word(0), word(1), word(2)], log, hang=True), 0.0)
    got = [await anext(agen) for _ in range(read + 1)]
    assert got[:2] == [ROLE, word(0)] and (read == 1 or got[2] == [word(1), word(2)])
    await agen.aclose()
    assert log == ["CancelledError"]


async def test_cancelling_the_reading_task_cancels_the_source() -> None:
    log: list[str] = []
    agen = batch_stream(source_of([word(0), word(1)], log, hang=True), 0.0)

    async def read_all() -> None:
        async for _ in agen:
            pass

    task = asyncio.create_task(read_all())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["CancelledError"]


class Response:
    """A DeploymentResponseGenerator stand-in over objects a replica's stream yields; records them."""

    def __init__(self, objects: AsyncIterator[Any]) -> None:
        self.objects, self.sent, self.cancelled = objects, [], 0

    def cancel(self) -> None:
        self.cancelled += 1

    async def _gen(self) -> AsyncIterator[Any]:
        async with contextlib.aclosing(self.objects) as objects:
            async for o in objects:
                self.sent.append(o)
                yield o

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()


class Handle:
    """A deployment handle whose `stream` is `target.stream` behind `batch_stream`, as in a model replica."""

    def __init__(self, target: Any, interval_ms: float | None) -> None:
        self.target, self.interval_ms, self.responses = target, interval_ms, []
        self.complete = target.complete

    def options(self, **_: Any) -> Handle:
        return self

    @property
    def stream(self) -> Handle:
        return self

    def remote(self, endpoint: str, body: dict[str, Any]) -> Response:
        r = Response(batch_stream(self.target.stream(endpoint, body), self.interval_ms))
        self.responses.append(r)
        return r


async def test_handle_client_unpacks_batches_in_order_and_cancels_when_closed_mid_batch() -> None:
    chunks = [ROLE, *(word(i) for i in range(5)), USAGE]
    h = Handle(type("T", (), {"stream": staticmethod(lambda e, b: source_of(chunks)), "complete": None})(), 0.0)
    assert [c async for c in HandleClient(h).stream("chat", {})] == chunks
    assert h.responses[0].sent == [ROLE, word(0), chunks[2:]] and h.responses[0].cancelled == 0
    async with contextlib.aclosing(HandleClient(h).stream("chat", {})) as s:
        seen = []
        async for c in s:
            seen.append(c)
            if len(seen) == 4:  # stops inside the batch
                break
    assert seen == chunks[:4] and h.responses[1].cancelled == 1


def _events(text: str) -> list[Any]:
    events = [e[6:] for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


ANSWER = "one two three four five six"


async def _router_stream(interval_ms: float | None, limits: LimitsConfig) -> tuple[list[Any], Rig, Handle]:
    small = FakeTarget("small", ANSWER, error_event_after=3)
    fakes = {t: small if t == "small" else FakeTarget(t, ANSWER) for t in ("small", "big", "api")}
    handle = Handle(small, interval_ms)
    rig = Rig(fakes, limits=limits, clients={"small": HandleClient(handle)})
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True))
    return _events(r.text), rig, handle


def _shape(events: list[Any]) -> list[Any]:
    return [e["error"]["code"] if "error" in e else [c.get("delta", c.get("text")) for c in e["choices"]]
            for e in events]


async def test_error_event_inside_a_batch_ends_the_stream_as_an_error_as_without_batching() -> None:
    limits = LimitsConfig(stream_failover="error")
    # a 10 s interval: everything after the first word, the error event too, crosses as one list
    batched, rig, handle = await asyncio.wait_for(_router_stream(10_000.0, limits), 20)
    sent = handle.responses[0].sent
    assert len(sent) == 2 and isinstance(sent[1], list) and "error" in sent[1][-1]
    unbatched, _, handle_off = await _router_stream(None, limits)
    assert all(not isinstance(o, list) for o in handle_off.responses[0].sent)
    assert _shape(batched) == _shape(unbatched)
    assert _shape(batched)[-1] == "upstream_stream_interrupted"
    assert [e["choices"][0]["delta"]["content"] for e in batched[:-1]] == ["one", " two", " three"]
    assert not rig.fakes["big"].calls


async def test_error_event_inside_a_batch_is_continued_on_an_alternate_as_without_batching() -> None:
    batched, rig, _ = await _router_stream(10_000.0, LimitsConfig())
    unbatched, _, _ = await _router_stream(None, LimitsConfig())
    assert _shape(batched) == _shape(unbatched)
    assert not any("error" in e for e in batched) and rig.fakes["big"].calls
    assert batched[-1]["router"]["failover"][0]["from"] == "small"
