"""The one fake model engine of the tests and benchmarks: RouterLLMServer's dict-level interface
(`complete(endpoint, body)` / `stream(endpoint, body)`, what the router's HandleClient calls) plus an
HTTP `__call__` answering an OpenAI chat body on the deployment's own route (the benchmarks' one-hop
baseline).

`FakeEngineReplica` is the plain class; `FakeEngine` is its Serve deployment for the reliability suite
(benchmarks/fake_engine.py deploys the same class with its own Serve options). Answers are the first
`max_tokens` words (at most `words`) of a fixed counting text, the first after `ttft_s`, then one per
`token_delay_s`, with real usage counts (whitespace words). `stats()` reports calls, cancellations (a
call the router stopped waiting for is cancelled by Serve inside this replica) and the replica's pid
and node. Scripted faults (`configure(...)` changes them at run time): `fail_next` calls raise `fail`
("rejected": a non-retryable UpstreamRejected, "error": a retryable BadGateway) before any output;
streams send a vLLM-style `{"error": ...}` event after `error_event_after` chunks; `die_after` N chunks the
replica's process exits (a replica dying mid-stream; Serve restarts it); `stall_after` N chunks the stream
waits `stall_s`. A continuation (issue 16) answers the rest of the counting text: chat with
`continue_final_message` and a final assistant message, or a completion prompt ending in the text's
first words, starts after the words it already has (up to `words` in all). Answer ids start with
`fake-<node id prefix>-`: multi-node tests read from answers where they were served.

`stream` speaks RouterLLMServer's batched protocol (deployments/handle_client.py `batch_stream`, the same
code): chunks alone up to the first with text, then the chunks arriving within `stream_batch_ms` of the
previous object as one list; `stream_batch_ms` (ROUTER_STREAM_BATCH_MS by default; None: off) sets it,
`configure(stream_batch_ms=..)` at run time. `stats()` counts the objects streams sent (`stream_objects`)
and the chunks in them (`stream_chunks`). The HTTP `__call__` streams SSE for a `"stream": true` body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import ray
from ray import serve

from deployments.handle_client import batch_interval_ms, batch_stream

ANSWER = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()


def _word(i: int) -> str:
    return ANSWER[i % len(ANSWER)]


def _prompt_words(endpoint: str, body: dict[str, Any]) -> int:
    if endpoint == "chat":
        return sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])
    p = body.get("prompt")
    return len((" ".join(map(str, p)) if isinstance(p, list) else str(p or "")).split())  # token-id prompts too


class FakeEngineReplica:
    def __init__(self, tid: str, ttft_s: float = 0.02, token_delay_s: float = 0.005, words: int = 8,
                 fail_next: int = 0, fail: str = "error", error_event_after: int | None = None,
                 tokens: int | None = None, die_after: int | None = None, stall_after: int | None = None,
                 stall_s: float = 30.0, stream_batch_ms: float | None | str = "env") -> None:
        words = tokens if tokens is not None else words  # `tokens`: the benchmarks' name for it
        self.tid, self.ttft_s, self.token_delay_s, self.words = tid, ttft_s, token_delay_s, words
        self.fail_next, self.fail, self.error_event_after = fail_next, fail, error_event_after
        self.die_after, self.stall_after, self.stall_s = die_after, stall_after, stall_s
        self.stream_batch_ms = batch_interval_ms() if stream_batch_ms == "env" else stream_batch_ms
        self.counts = {"complete": 0, "stream": 0, "stream_done": 0, "cancelled": 0, "complete_cancelled": 0,
                       "failed": 0, "continued": 0, "stream_objects": 0, "stream_chunks": 0}
        # Answer ids carry the node that served them (multi-node tests read placement from answers).
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def configure(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "pid": os.getpid(), "tid": self.tid, "node": self.node}

    def _n(self, body: dict[str, Any], start: int = 0) -> int:
        cap = body.get("max_tokens") or body.get("max_completion_tokens") or self.words
        return max(1, min(int(cap), self.words - start))

    def _start(self, endpoint: str, body: dict[str, Any]) -> int:
        """Where a continuation picks the counting text up (0: a new answer)."""
        if endpoint == "chat":
            msgs = body.get("messages") or []
            if not (body.get("continue_final_message") and msgs and msgs[-1].get("role") == "assistant"):
                return 0
            have = str(msgs[-1].get("content") or "").split()
        else:
            p = body.get("prompt")
            have = (p[0] if isinstance(p, list) and p and isinstance(p[0], str) else str(p or "")).split()
        for k in range(min(len(have), self.words - 1), 0, -1):
            if have[-k:] == [_word(i) for i in range(k)]:
                return k
        return 0

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            from deployments.contracts import BadGateway, UpstreamRejected

            self.fail_next -= 1
            self.counts["failed"] += 1
            if self.fail == "rejected":
                raise UpstreamRejected(f"fake {self.tid}: rejected with HTTP 400")
            raise BadGateway(f"fake {self.tid}: engine error")

    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self.counts["complete"] += 1
        self._maybe_fail()
        n = self._n(body)
        try:
            await asyncio.sleep(self.ttft_s + (n - 1) * self.token_delay_s)
        except asyncio.CancelledError:
            self.counts["complete_cancelled"] += 1
            raise
        text = " ".join(_word(i) for i in range(n))
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        if endpoint == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        p = _prompt_words(endpoint, body)
        return {
            "id": f"fake-{self.node}-{uuid.uuid4().hex[:8]}", "object": "chat.completion" if endpoint == "chat"
            else "text_completion", "created": int(time.time()), "model": self.tid, "choices": [choice],
            "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n},
        }

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any] | list[dict[str, Any]]]:
        interval = self.stream_batch_ms
        assert interval is None or isinstance(interval, (int, float))
        async with contextlib.aclosing(batch_stream(self._chunks(endpoint, body), interval)) as items:
            async for item in items:
                self.counts["stream_objects"] += 1
                self.counts["stream_chunks"] += len(item) if isinstance(item, list) else 1
                yield item

    async def _chunks(self, endpoint: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.counts["stream"] += 1
        self._maybe_fail()
        start = self._start(endpoint, body)
        self.counts["continued"] += start > 0
        n = self._n(body, start)
        base = {"id": f"fake-{self.node}-{uuid.uuid4().hex[:8]}", "created": int(time.time()), "model": self.tid,
                "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion"}
        try:
            await asyncio.sleep(self.ttft_s)
            for i in range(n):
                w = _word(start + i)
                if i:
                    await asyncio.sleep(self.token_delay_s)
                if self.die_after is not None and i >= self.die_after:
                    await asyncio.sleep(0.3)  # let the chunks already yielded reach the router
                    os._exit(1)  # the replica dies mid-stream, as under ray.kill or a node loss
                if self.stall_after is not None and i >= self.stall_after:
                    await asyncio.sleep(self.stall_s)
                if self.error_event_after is not None and i >= self.error_event_after:
                    yield {"error": {"object": "error", "message": "fake engine failed", "type": "InternalServerError",
                                     "code": 500}}  # what vLLM sends when generation fails mid-stream
                    self.counts["failed"] += 1
                    return
                piece = w if start + i == 0 else " " + w
                if endpoint == "chat":
                    ch = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                else:
                    ch = {"index": 0, "text": piece, "finish_reason": None}
                yield {**base, "choices": [ch]}
            p = _prompt_words(endpoint, body)
            yield {**base, "choices": [],
                   "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}}
            self.counts["stream_done"] += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.counts["cancelled"] += 1
            raise

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        body = json.loads(await request.body())
        if not body.get("stream"):
            return JSONResponse(await self.complete("chat", body))

        async def sse() -> AsyncIterator[bytes]:  # Serve batches a replica's HTTP messages itself
            async with contextlib.aclosing(self._chunks("chat", body)) as chunks:
                async for c in chunks:
                    yield b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")


FakeEngine = serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.05})(FakeEngineReplica)
