"""A stream broken after output is continued on an alternate (issue 16), in process over fake targets."""

from __future__ import annotations

import json
from typing import Any

from router.limits import LimitsConfig
from tests.unit.router.fakes import FakeTarget, Rig, chat_body

ANSWER = "one two three four five six"


class Continuing(FakeTarget):
    """Answers ANSWER; asked to continue a final assistant message, answers only the words after it."""

    async def _chunks(self, endpoint: str, body: dict[str, Any]):  # type: ignore[override]
        msgs = body.get("messages") or []
        have = len(str(msgs[-1]["content"]).split()) if body.get("continue_final_message") else 0
        words = ANSWER.split()[have:]
        cap = body.get("max_tokens")
        self.answer = " ".join(words[:cap] if cap else words)
        async for chunk in super()._chunks(endpoint, body):
            ch = (chunk.get("choices") or [{}])[0]
            if have and ch.get("delta", {}).get("content") and not ch["delta"]["content"].startswith(" "):
                ch["delta"]["content"] = " " + ch["delta"]["content"]  # it continues a text, after a space
            yield chunk


def _events(text: str) -> list[Any]:
    events = [e[6:] for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _fakes(**over: FakeTarget) -> dict[str, FakeTarget]:
    return {t: over.get(t) or Continuing(t, ANSWER) for t in ("small", "big", "api")}


async def test_broken_stream_is_continued_with_the_sent_text_and_reduced_max_tokens() -> None:
    rig = Rig(_fakes(small=Continuing("small", ANSWER, fail_after=2)))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(
            stream=True, max_tokens=5, stream_options={"include_usage": True}))
    chunks = _events(r.text)
    texts = [(c["model"], c["choices"][0]["delta"]["content"]) for c in chunks if c["choices"]]
    assert texts == [("small", "one"), ("small", " two"), ("big", " three"), ("big", " four"), ("big", " five")]
    assert {c["id"] for c in chunks} == {"cmpl-1"}
    _, sent = rig.fakes["big"].calls[-1]
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["messages"][-1] == {"role": "assistant", "content": "one two"} and sent["max_tokens"] == 3
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 2 + 3
    assert last["router"]["failover"] == [{"from": "small", "to": "big", "after_chunks": 2,
                                           "why": "upstream_stream_interrupted"}]
    assert rig.metrics.requests[("big", "chat", "continued")] == 1
    assert rig.metrics.fallbacks[("small", "big", "continue")] == 1
    assert rig.metrics.cost_usd["small"] and rig.metrics.cost_usd["big"]  # each call charged to its target
    (req,) = [s for s in rig.spans() if s.attributes.get("router.continued") is not None]
    assert req.attributes["router.continued"] == 1 and req.attributes["router.reason"].endswith("+continued")
    assert rig.estimator.in_flight("small") == rig.estimator.in_flight("big") == 0


async def test_max_tokens_used_up_at_the_failure_ends_normally() -> None:
    rig = Rig(_fakes(small=FakeTarget("small", ANSWER, fail_after=2)))  # fails after its 2 (= max_tokens)
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=2))
    chunks = _events(r.text)
    assert not any("error" in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["one", " two"]
    assert chunks[-1]["router"]["failover"][0]["to"] == ""
    assert not rig.fakes["big"].calls


async def test_n_above_one_and_stream_failover_error_are_not_continued() -> None:
    for body, limits in ((chat_body(stream=True, n=2), LimitsConfig()),
                         (chat_body(stream=True), LimitsConfig(stream_failover="error"))):
        rig = Rig(_fakes(small=Continuing("small", ANSWER, fail_after=2)), limits=limits)
        async with rig.http() as http:
            r = await http.post("/v1/chat/completions", json=body)
        assert _events(r.text)[-1]["error"]["code"] == "upstream_stream_interrupted"
        assert not rig.fakes["big"].calls
