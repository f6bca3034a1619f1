"""Request limits the ingress enforces before any target is called."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LimitsConfig(BaseModel):
    """Bounds on request size, prompt length, retries and time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, description="Largest request body accepted, in bytes; larger → 413."
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Largest estimated prompt accepted, in tokens (None = the largest context window "
        "of any target); longer → 400.",
    )
    max_alternates: int = Field(
        default=2, ge=0, description="How many alternate targets to try after the chosen one fails before "
        "its first token; also the most continuations of one stream that fails after output went out."
    )
    stream_failover: Literal["continue", "continue_any", "error"] = Field(
        default="continue", description="A stream that fails after output went out: `continue` the answer "
        "on the next alternate that can (local engines; providers for completions only, they cannot continue "
        "a chat message), `continue_any` (providers for chat too: their answer may restart the sentence), "
        "or end it with an `error` event."
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="The request's deadline in s, shared by all its attempts (to the "
        "answer, or to the first token for streams); exceeded → 504. Also the longest wait between two "
        "chunks of a stream."
    )
    attempt_timeout_floor_s: float = Field(
        default=10.0,
        gt=0,
        description="Least time one attempt gets before the router gives up on it and tries the next "
        "alternate (a target whose only replica died queues requests until Serve restarts it).",
    )
    attempt_timeout_factor: float = Field(
        default=4.0,
        gt=0,
        description="An attempt's time limit is this factor times the latency predicted for the request "
        "(TTFT for streams, end to end for its max_tokens otherwise), at least attempt_timeout_floor_s, at "
        "most what is left of request_timeout_s.",
    )
    max_n: int = Field(
        default=8, ge=1, description="Most choices one request may ask for (`n`, and `best_of` for completions); "
        "more → 400. Each choice costs a full generation on the engine."
    )
    max_json_depth: int = Field(
        default=64, ge=4, le=500, description="Deepest nesting of arrays and objects accepted in a request "
        "body; deeper → 400 (a body of 100,000 brackets must not exhaust the parser's recursion)."
    )
    starting_retry_after_s: int = Field(
        default=10, ge=1, description="Retry-After (s) of the 503 answered while the models are still starting."
    )
    expected_output_tokens: int = Field(
        default=256,
        ge=1,
        description="Output length the policy plans with when the request has no max_tokens.",
    )
