"""One upstream call, one object: an `Attempt` owns the call's budget reservation, live-view ticket,
client span, time limit, cancellation and charge, and every way a call can end goes through it once:

- `ok(usage, ttft_ms)`: answered; latency observed, actual cost charged;
- `fail(e)`: the target failed (or refused): the error is classified (target fault or request-caused),
  what the target produced is charged (nothing if it produced nothing);
- `abandon(why)`: the router stopped waiting (attempt timeout, client gone, escalation dropped): the
  upstream call is cancelled by whoever holds it (deployments.handle_client cancels the Serve call when
  its awaiting task is cancelled or its stream closed) and the work it probably did is charged.

`async with attempt:` routes an exception that escapes the block to `fail` / `abandon`. `Relay` is the
stream handed to the HTTP layer: its `aclose()` ends the attempt and the request even when it was never
iterated (Starlette does not close body iterators, and a client gone before the first chunk would
otherwise skip every `finally`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.types import Target
from router.budget import Budget, Reservation
from router.errors import BadGateway, RouterError, StreamInterrupted, UpstreamError, UpstreamTimeout
from router.failures import upstream_failure
from router.metrics import Metrics
from router.plan import Plan
from router.telemetry import Telemetry, record_error
from router.usage import content_of
from router.view import LiveView

logger = logging.getLogger(__name__)


def retryable(e: BaseException) -> bool:
    # Class attribute on purpose: Ray re-raises handle errors as a subclass of the cause's class.
    return not isinstance(e, RouterError) or (isinstance(e, UpstreamError) and e.retryable)


@dataclass
class Deps:
    """What attempts need of the service."""

    view: LiveView
    telemetry: Telemetry
    metrics: Metrics
    budget: Budget


class Attempt:
    def __init__(self, deps: Deps, plan: Plan, target: Target, index: int, *, stream: bool,
                 timeout_s: float, own_limit: bool = True, body: Mapping[str, Any] | None = None,
                 prompt_tokens: int | None = None, max_tokens: int | None = None) -> None:
        self.d, self.plan, self.target, self.index, self.stream = deps, plan, target, index, stream
        self.tid = target.id
        self.timeout_s = timeout_s
        self.own_limit = own_limit  # False: the request's deadline, not the target, bounded the wait
        self.body: Mapping[str, Any] = body or {}
        # A stream's continuation asks with a longer prompt for fewer tokens than the request's plan.
        r = plan.route
        self.prompt_tokens = prompt_tokens if prompt_tokens is not None else r.prompt_tokens
        self.max_tokens = max_tokens if max_tokens is not None else (r.max_tokens or r.expected_output_tokens)
        self.usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0}  # what was charged
        self.reservation: Reservation | None = None
        self.span: Any = None
        self.ticket: Any = None
        self.t0 = 0.0
        self.pieces = 0  # content chunks passed on (streams)
        self.got_first = False  # a stream's first chunk arrived (the prompt was processed)
        self.cost = 0.0
        self.outcome: str | None = None  # ok | failed | abandoned, once closed

    @property
    def closed(self) -> bool:
        return self.outcome is not None

    # -- opening ------------------------------------------------------------------------------------
    async def open(self) -> Attempt:
        """Reserve the expected cost (BudgetExhausted before any upstream call), then start the call."""
        expected = self.target.expected_cost_usd(self.prompt_tokens, self.max_tokens)
        self.reservation = await self.d.budget.reserve(self.plan.principal, expected)
        self.span = self.d.telemetry.client(self.plan.span, self.plan.endpoint, self.tid, self.index)
        self.ticket = self.d.view.started(self.tid)
        self.t0 = time.perf_counter()
        return self

    async def __aenter__(self) -> Attempt:
        return self if self.span is not None else await self.open()

    async def __aexit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if e is None or self.closed:
            return False
        if isinstance(e, (asyncio.CancelledError, GeneratorExit)):
            self.abandon("cancelled")
            return False
        raise self.fail(e) from None

    async def call(self, awaitable: Any) -> Any:
        """Await the upstream call within this attempt's time limit (on expiry the await is cancelled,
        which cancels the upstream call)."""
        async with asyncio.timeout(self.timeout_s):
            return await awaitable

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    # -- ending (exactly once) ------------------------------------------------------------------------
    def ok(self, usage: Mapping[str, Any], ttft_ms: float, tpot_ms: float) -> float:
        out = int(usage.get("completion_tokens") or 0)
        self.d.view.observe(self.tid, ttft_ms, tpot_ms, out, self.ticket)
        if self.stream:
            self.d.metrics.ttft(self.tid, ttft_ms)
        self.d.metrics.e2e(self.tid, self.elapsed_ms)
        return self._close("ok", usage)

    def fail(self, e: BaseException) -> BaseException:
        """Book a failed call; returns the error it stands for (to raise, or to remember for failover)."""
        counts = True
        if isinstance(e, TimeoutError):  # our own time limit: the call is abandoned, not failed
            err: BaseException = UpstreamTimeout(f"target '{self.tid}' did not answer in time")
            counts = self.own_limit
        elif isinstance(e, StopAsyncIteration):
            err = BadGateway(f"target '{self.tid}' returned an empty stream")
        else:  # request-caused rejections become a 400 naming the field, never the target's fault
            err = upstream_failure(self.tid, e, self.body)
        if (retryable(err) or isinstance(err, StreamInterrupted)) and counts:  # a target fault
            self.d.view.error(self.tid)
        logger.warning("call to %s failed: %s", self.tid, getattr(err, "code", type(err).__name__))
        record_error(self.span, err)
        timed_out = isinstance(e, TimeoutError)
        self._close("abandoned" if timed_out else "failed", self._work_usage(estimate=timed_out))
        return err

    def abandon(self, why: str) -> None:
        """The router stopped waiting (client gone, escalation dropped): charge the work probably done."""
        if self.closed:
            return
        self.span.set_attribute("router.abandoned", why)
        self._close("abandoned", self._work_usage(estimate=True))

    def _work_usage(self, *, estimate: bool) -> dict[str, int]:
        """Tokens a call that did not finish probably cost: the prompt if it got anywhere, plus what was
        streamed, or (not streamed, `estimate`) what the target's prior says it generated in the time."""
        out = self.pieces
        if estimate and not self.stream:
            lat = self.target.latency
            out = int(max(0.0, self.elapsed_ms - lat.ttft_ms) / max(lat.tpot_ms, 1e-3))
            out = min(out, self.max_tokens)
        started = out > 0 or self.got_first or (estimate and self.elapsed_ms >= self.target.latency.ttft_ms)
        return {"prompt_tokens": self.prompt_tokens if started else 0, "completion_tokens": out}

    def _close(self, outcome: str, usage: Mapping[str, Any]) -> float:
        if self.closed:
            return self.cost
        self.outcome = outcome
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.usage = {"prompt_tokens": p, "completion_tokens": c}
        self.cost = self.target.expected_cost_usd(p, c) if (p or c) else 0.0
        self.d.view.finished(self.tid, self.ticket)
        if self.reservation is not None:
            self.d.budget.settle(self.reservation, self.cost)
        self.d.metrics.cost(self.tid, self.cost)
        self.span.set_attributes({
            "gen_ai.response.model": self.tid, "gen_ai.usage.input_tokens": p,
            "gen_ai.usage.output_tokens": c, "router.cost_usd": self.cost, "router.call_outcome": outcome,
        })
        self.span.end()
        return self.cost


def error_event(chunk: Mapping[str, Any]) -> bool:
    """An `{"error": ...}` event inside a stream (vLLM sends one when generation fails mid-way)."""
    return "error" in chunk and not chunk.get("choices")


class Relay:
    """The stream of one answered request, as the HTTP layer iterates it.

    When the upstream fails after output went out, `resume(failed, text, produced, tried, switches)`
    (router/continuation.py) may return the attempt that continues the answer on an alternate: its
    chunks follow under the same `id`, the last chunk carries `router.failover`, and the final usage
    adds every call's. `on_end(relay, usage, error)` finishes the request (span, metrics) once.
    `aclose()` is safe at any point, before the first `__anext__` included, and always ends the
    attempt and closes upstream.
    """

    def __init__(self, attempt: Attempt, upstream: AsyncIterator[dict[str, Any]], first: dict[str, Any], *,
                 wants_usage: bool, chunk_timeout_s: float,
                 on_end: Callable[[Relay, Mapping[str, Any] | None, BaseException | None], None],
                 resume: Callable[..., Awaitable[Any]] | None = None, tried: set[str] | None = None) -> None:
        self.attempt, self._up, self._first = attempt, upstream, first
        self._wants_usage, self._chunk_timeout_s, self._on_end = wants_usage, chunk_timeout_s, on_end
        self._resume, self._tried = resume, tried if tried is not None else {attempt.tid}
        self.attempts: list[Attempt] = [attempt]
        self.switches: list[Any] = []  # continuation.Switch, one per continuation (or end for max_tokens)
        self.text = ""  # choice 0's text passed on so far (what a continuation continues)
        self.continuable = True  # False once a tool call or a second choice went out
        self.completed = False  # ended normally (the last call answered, or max_tokens was used up)
        self._id, self._created, self._object = first.get("id"), first.get("created"), first.get("object")
        self._gen = self._run()
        self._ended = False
        attempt.got_first = True
        self._counted: dict[str, Any] | None = first
        if content_of(first):  # already generated, even if nobody reads it
            attempt.pieces = max(attempt.pieces, 1)

    @property
    def cost(self) -> float:
        return sum(a.cost for a in self.attempts)

    @property
    def pieces(self) -> int:
        return sum(a.pieces for a in self.attempts)

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()
        finally:
            self._end(None, None)  # never iterated: the client went away before the first chunk
            await aclose_quietly(self._up)

    def _end(self, usage: Mapping[str, Any] | None, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        if not self.attempt.closed:
            self.attempt.abandon("client_gone")
        self._on_end(self, usage, error)

    def _total(self, extra: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Usage of every closed call of this request, plus `extra` (the running call's)."""
        p = sum(a.usage["prompt_tokens"] for a in self.attempts if a.closed)
        c = sum(a.usage["completion_tokens"] for a in self.attempts if a.closed)
        if extra:
            p += int(extra.get("prompt_tokens") or 0)
            c += int(extra.get("completion_tokens") or 0)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _pass(self, a: Attempt, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk as the client gets it (None: not passed on)."""
        choices = chunk.get("choices") or []
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            d = ch.get("delta")
            delta: dict[str, Any] = d if isinstance(d, dict) else {}
            if ch.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("function_call"):
                self.continuable = False  # docs/router.md: tool calls and n > 1 are not continued
        chunk["model"] = a.tid
        if self.switches:
            chunk["id"], chunk["created"] = self._id, self._created  # one stream, one id
            ch0 = choices[0] if choices and isinstance(choices[0], dict) else {}
            if choices and not content_of(chunk) and not ch0.get("finish_reason") and not ch0.get("logprobs"):
                return None  # the continuation's role-only opening chunk: the client has had one
        self.text += content_of(chunk)
        if not self._wants_usage:
            chunk.pop("usage", None)
        elif chunk.get("usage") and len(self.attempts) > 1:
            chunk["usage"] = self._total(chunk["usage"])
        return chunk if self._wants_usage or choices else None  # the usage-only chunk has `"choices": []`

    def _closing(self, model: str) -> list[dict[str, Any]]:
        """Chunks ending a stream whose max_tokens (or budget) ran out at a failure: a finish, usage."""
        base = {"id": self._id, "object": self._object, "created": self._created, "model": model}
        end: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        if self._object == "chat.completion.chunk":
            end["delta"] = {}
        else:
            end["text"] = ""
        out = [{**base, "choices": [end]}]
        if self._wants_usage:
            out.append({**base, "choices": [], "usage": self._total()})
        return out

    async def _run(self) -> AsyncGenerator[dict[str, Any], None]:
        from router.continuation import EXHAUSTED, Switch

        ttft_ms: float | None = None
        usage: Mapping[str, Any] | None = None
        error: BaseException | None = None
        held: dict[str, Any] | None = None  # after a switch the last chunk waits to carry router.failover
        chunk = self._first
        try:
            while True:
                a = self.attempt
                try:
                    while True:
                        if error_event(chunk):
                            raise StreamInterrupted(f"target '{a.tid}' sent an error event mid-stream")
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        if content_of(chunk):
                            if chunk is not self._counted:  # a call's first was counted when it arrived
                                a.pieces += 1
                            if ttft_ms is None:
                                ttft_ms = a.elapsed_ms
                        out = self._pass(a, chunk)
                        if out is not None:
                            if not self.switches:
                                yield out
                            else:
                                if held is not None:
                                    yield held
                                held = out
                        try:
                            async with asyncio.timeout(self._chunk_timeout_s):
                                chunk = await anext(self._up)
                        except StopAsyncIteration:
                            break
                except (asyncio.CancelledError, GeneratorExit):  # the client went away
                    raise
                except Exception as e:
                    err = e if isinstance(e, StreamInterrupted) else StreamInterrupted(
                        f"target '{a.tid}' failed mid-stream ({type(e).__name__})"
                    )
                    logger.warning("stream from %s interrupted: %s", a.tid, type(e).__name__)
                    a.fail(err)
                    await aclose_quietly(self._up)  # the abandoned call is cancelled upstream
                    nxt = None
                    if self._resume is not None and self.continuable:
                        nxt = await self._resume(a, self.text, self.pieces, self._tried, len(self.switches))
                    if isinstance(nxt, tuple):
                        b, self._up, chunk = nxt
                        self.switches.append(Switch(a.tid, b.tid, self.pieces, err.code))
                        self.attempts.append(b)
                        self.attempt, b.got_first, self._counted = b, True, chunk
                        if content_of(chunk):
                            b.pieces = 1
                        usage, ttft_ms = None, None
                        continue
                    if nxt == EXHAUSTED:  # nothing left to ask for: the answer ends normally
                        self.switches.append(Switch(a.tid, "", self.pieces, "max_tokens_or_budget_used"))
                        self.completed = True
                        closing = self._closing(a.tid)
                        closing[-1]["router"] = {"failover": [s.as_dict() for s in self.switches]}
                        if held is not None:
                            yield held
                        held = None
                        for c in closing:
                            yield c
                        usage = self._total()
                        break
                    error = err
                    if held is not None:
                        yield held
                    held = None
                    yield err.body()
                    break
                else:
                    e2e = a.elapsed_ms
                    u = {"prompt_tokens": int((usage or {}).get("prompt_tokens") or a.prompt_tokens),
                         "completion_tokens": int((usage or {}).get("completion_tokens") or a.pieces)}
                    ttft = ttft_ms if ttft_ms is not None else e2e
                    a.ok(u, ttft, (e2e - ttft) / max(u["completion_tokens"] - 1, 1))
                    self.completed = True
                    usage = self._total()
                    if held is not None:
                        held["router"] = {"failover": [s.as_dict() for s in self.switches]}
                        yield held
                        held = None
                    break
        finally:
            self._end(usage if self.completed else None, error)
            await aclose_quietly(self._up)


async def first_chunk(a: Attempt, agen: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """A stream's first chunk, awaited through its Attempt (its time limit). On any failure the stream is
    closed and the error re-raised; a cancellation is booked on the Attempt first (the caller books other
    failures its own way: failover before the first chunk, or the next continuation candidate)."""
    try:
        first = await a.call(anext(agen))
        if error_event(first):  # an error event before any output: the target failed
            raise BadGateway(f"target '{a.tid}' sent an error event before any output")
        return first
    except BaseException as e:
        await aclose_quietly(agen)
        if isinstance(e, (asyncio.CancelledError, GeneratorExit)):
            a.abandon("cancelled")
        raise


async def aclose_quietly(agen: Any) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken upstream must not mask the outcome
            pass
