"""Reading OpenAI response dicts: usage, answer text, logprobs, and latency split for non-streams."""

from __future__ import annotations

from typing import Any

from policies.types import Target
from router.parse import estimate_tokens


def _first_choice(resp: dict[str, Any]) -> dict[str, Any]:
    choices = resp.get("choices") or []
    return choices[0] if choices and isinstance(choices[0], dict) else {}


def answer_text(resp: dict[str, Any], endpoint: str) -> str:
    choice = _first_choice(resp)
    if endpoint == "chat":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def usage_of(resp: dict[str, Any], prompt_estimate: int, endpoint: str) -> dict[str, int]:
    """The response's usage; estimated (and written into the response) only if the target gave none."""
    u = resp.get("usage")
    if isinstance(u, dict) and isinstance(u.get("prompt_tokens"), int) and isinstance(
        u.get("completion_tokens"), int
    ):
        return u
    out = estimate_tokens(answer_text(resp, endpoint))
    u = {"prompt_tokens": prompt_estimate, "completion_tokens": out, "total_tokens": prompt_estimate + out}
    resp["usage"] = u
    return u


def answer_signal(resp: dict[str, Any], endpoint: str) -> tuple[str, float | None]:
    """(answer text, mean token logprob or None) for a cascade policy's accept()."""
    lp = _first_choice(resp).get("logprobs") or {}
    values: list[float] = []
    if isinstance(lp, dict):
        if isinstance(lp.get("content"), list):
            values = [t["logprob"] for t in lp["content"] if isinstance(t, dict) and "logprob" in t]
        elif isinstance(lp.get("token_logprobs"), list):
            values = [v for v in lp["token_logprobs"] if isinstance(v, (int, float))]
    mean = sum(values) / len(values) if values else None
    return answer_text(resp, endpoint), mean


def content_of(chunk: dict[str, Any]) -> str:
    """Text carried by one stream chunk (chat delta or completion text)."""
    choice = _first_choice(chunk)
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")


def split_latency(target: Target, e2e_ms: float, output_tokens: int) -> tuple[float, float]:
    """(ttft_ms, tpot_ms) for a non-streamed answer, which only shows its end-to-end time.

    The split follows the target's prior ratio of prefill to decode time, so the estimator's TTFT and
    TPOT sketches stay consistent with what streams report directly.
    """
    decode = max(output_tokens - 1, 0)
    p = target.latency
    share = p.ttft_ms / (p.ttft_ms + decode * p.tpot_ms)
    ttft = e2e_ms * share
    return ttft, (e2e_ms - ttft) / decode if decode else 0.0
