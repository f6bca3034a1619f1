"""Continuing a broken stream on an alternate (issue 16).

When a stream fails after text went out (replica or node death, an upstream error event, a stall past
the chunk limit), `Relay` asks `Continuer.resume` for a continuation instead of ending with an error
event: the next alternate of the plan that can take it gets the original request plus the text already
sent, and its chunks are passed on after the ones the client has.

- chat: the original messages plus the sent text as a final assistant message, with vLLM's
  `continue_final_message: true, add_generation_prompt: false` (the model continues that message
  instead of opening a new turn);
- completions: the sent text appended to the prompt (a text prompt; a token-id prompt is not continued);
- `max_tokens` / `max_completion_tokens` reduced by the chunks already produced (one token each, as the
  engines stream); nothing left → the stream ends normally (`finish_reason: "length"`).

OpenAI-compatible providers have no way to continue an assistant message: with the default
`limits.stream_failover: continue` a provider is skipped as a chat continuation (completions are
continued there too); `continue_any` also sends providers the chat continuation (their answer may
restart the sentence); `error` keeps the old behaviour (error event, no continuation).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.attempt import Attempt, first_chunk
from router.errors import BudgetExhausted
from router.parse import estimate_tokens
from router.plan import Plan

if TYPE_CHECKING:
    from router.service import RouterService

EXHAUSTED = "exhausted"  # resume(): max_tokens (or the budget) is used up, end the stream normally


@dataclass
class Switch:
    """One continuation, as the span, the metrics and the last chunk's `router.failover` show it."""

    from_target: str
    to_target: str
    after_chunks: int
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.from_target, "to": self.to_target, "after_chunks": self.after_chunks,
                "why": self.why}


def not_continuable(body: Mapping[str, Any]) -> str | None:
    """Why a stream of this request cannot be continued at all (None: it can)."""
    if int(body.get("n") or 1) > 1 or int(body.get("best_of") or 1) > 1:
        return "n>1"
    return None


def continuation_body(plan: Plan, text: str, produced: int) -> dict[str, Any] | str | None:
    """The body asking for the rest of the answer after `text` (`produced` chunks); EXHAUSTED when no
    tokens are left to ask for; None when this request cannot be continued (token-id prompt)."""
    body = {k: v for k, v in plan.body.items() if k not in ("echo",)}
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int):
            left = body[name] - produced
            if left <= 0:
                return EXHAUSTED
            body[name] = left
    if plan.endpoint == "chat":
        body["messages"] = [*body["messages"], {"role": "assistant", "content": text}]
        body["continue_final_message"], body["add_generation_prompt"] = True, False
        return body
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        body["prompt"] = prompt + text
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        body["prompt"] = [prompt[0] + text]
    else:
        return None
    return body


class Continuer:
    """Finds and opens the attempt that continues a broken stream (owned by the service)."""

    def __init__(self, service: RouterService) -> None:
        self.s = service

    def candidates(self, plan: Plan, tried: set[str], need_tokens: int) -> list[str]:
        s, mode = self.s, self.s.limits.stream_failover
        out = []
        # Untried alternates first, then the targets already used: another replica of the one that just
        # failed may serve it (a node lost takes one replica of each model; Serve routes around it).
        for tid in [t for t in plan.attempts if t not in tried] + [t for t in plan.attempts if t in tried]:
            t = s._by_id[tid]
            if not s.view.healthy(tid):
                continue
            if plan.endpoint == "chat" and t.kind != "local" and mode != "continue_any":
                continue  # providers cannot continue an assistant message (module docstring)
            if need_tokens > t.context_window:
                continue
            out.append(tid)
        return out

    async def resume(self, plan: Plan, failed: Attempt, text: str, produced: int, tried: set[str],
                     switches: int) -> tuple[Attempt, AsyncIterator[dict[str, Any]], dict[str, Any]] | str | None:
        """(attempt, upstream, first chunk) of the continuation; EXHAUSTED; or None (end with the error)."""
        s, lim = self.s, self.s.limits
        if lim.stream_failover == "error" or switches >= lim.max_alternates or not_continuable(plan.body):
            return None
        body = continuation_body(plan, text, produced)
        if body is None or body == EXHAUSTED:
            return body
        assert isinstance(body, dict)
        r = plan.route
        prompt = r.prompt_tokens + estimate_tokens(text)
        left = body.get("max_tokens") or body.get("max_completion_tokens")
        out = int(left) if isinstance(left, int) else r.expected_output_tokens
        # A continuation gets the first-token deadline the request had (limits.request_timeout_s), from
        # the moment of the failure; each attempt within it its own limit, as before the first chunk.
        deadline = time.perf_counter() + lim.request_timeout_s
        c = r.constraints
        cands = self.candidates(plan, tried, prompt + out)
        # Each candidate once, then once more while calls are left (1 + max_alternates per failure): right
        # after a node is lost Serve may still route a call to its dead replica, the next one goes elsewhere.
        for tid in (cands * 2)[: max(len(cands), 1 + lim.max_alternates)]:
            if not s.view.healthy(tid):
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            target = s._by_id[tid]
            ttft, e2e = s.view.latency.predict(target, prompt, out)
            if c.max_latency_ms is not None and c.latency_metric != "ttft":
                if (time.perf_counter() - plan.t0) * 1000 + e2e > c.max_latency_ms:
                    continue  # the rest of the answer would not fit the latency bound there
            tried.add(tid)
            own = max(lim.attempt_timeout_floor_s, lim.attempt_timeout_factor * ttft / 1000)
            sent = {**body, "model": tid}
            a = Attempt(s._deps, plan, target, failed.index + 1, stream=True, timeout_s=min(own, remaining),
                        own_limit=own < remaining, body=sent, prompt_tokens=prompt, max_tokens=out)
            try:
                await a.open()
            except BudgetExhausted:
                return EXHAUSTED  # what is left of the key's budget does not pay for the rest
            s.metrics.fallback(failed.tid, tid, "continue")
            agen = s.clients[tid].stream(plan.endpoint, sent)
            try:
                first = await first_chunk(a, agen)
            except Exception as e:  # a cancellation passes (first_chunk booked it)
                a.fail(e)
                continue
            return a, agen, first
        return None
