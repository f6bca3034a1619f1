"""Request parsing: the OpenAI request subset the router reads, constraints, token estimates.

Unknown top-level fields are allowed and passed to the target unchanged (samplers, tools, ...);
`routing` is ours, so it is validated strictly and an unknown field there is a 400 naming it.
Error messages name the field and the problem, never the value (it may be prompt text).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from policies.types import Constraints, RouteRequest
from router.errors import BadRequest

Endpoint = Literal["chat", "completions"]


class Routing(BaseModel):
    """The `routing` object of a request body (contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_latency_ms: float | None = Field(default=None, gt=0)
    latency_metric: Literal["ttft", "e2e"] | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: float | None = Field(default=None, ge=0)
    allow_fallback: bool | None = None
    allowed_targets: tuple[str, ...] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    stream: StrictBool = False
    max_tokens: int | None = Field(default=None, ge=1)
    routing: Routing | None = None


class ChatRequest(_Common):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Common):
    prompt: str | list[str]


_HEADER_FIELDS = {
    "x-router-max-latency-ms": "max_latency_ms",
    "x-router-latency-metric": "latency_metric",
    "x-router-min-quality": "min_quality",
    "x-router-max-cost-usd": "max_cost_usd",
    "x-router-allow-fallback": "allow_fallback",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_errors(e: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in e.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{prefix}{loc}: {msg}")
    return "; ".join(parts)


def parse_body(body: Any, endpoint: Endpoint) -> ChatRequest | CompletionRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    cls = ChatRequest if endpoint == "chat" else CompletionRequest
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        raise BadRequest(f"invalid request: {_field_errors(e)}") from None


def routing_from_headers(headers: Mapping[str, str]) -> Routing | None:
    """Constraints from `x-router-*` headers (header names are case-insensitive; keys lower-cased)."""
    raw: dict[str, Any] = {}
    for name, field in _HEADER_FIELDS.items():
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        if field == "allow_fallback":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise BadRequest(f"header {name}: expected true or false")
            raw[field] = low in _TRUE
        else:
            raw[field] = value
    if not raw:
        return None
    try:
        return Routing.model_validate(raw)
    except ValidationError as e:
        msg = _field_errors(e)
        for name, field in _HEADER_FIELDS.items():
            msg = msg.replace(f"{field}:", f"header {name}:")
        raise BadRequest(f"invalid routing header: {msg}") from None


def merge_constraints(
    base: Constraints, *layers: Routing | None, key_allowed: tuple[str, ...] | None = None
) -> Constraints:
    """Key defaults, then headers, then the body (later layers win); allowed targets intersect."""
    update: dict[str, Any] = {}
    allowed = key_allowed if key_allowed is not None else base.allowed_targets
    if key_allowed is not None and base.allowed_targets is not None:
        allowed = tuple(t for t in base.allowed_targets if t in key_allowed)
    for layer in layers:
        if layer is None:
            continue
        for k, v in layer.model_dump(exclude_none=True).items():
            if k == "allowed_targets":
                allowed = tuple(v) if allowed is None else tuple(t for t in allowed if t in v)
            else:
                update[k] = v
    update["allowed_targets"] = allowed
    return base.model_copy(update=update)


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if isinstance(p.get("text"), str))


def estimate_tokens(text: str) -> int:
    """~4 characters per token for English BPE vocabularies; enough for routing and limits."""
    return math.ceil(len(text) / 4)


def prompt_and_tokens(req: ChatRequest | CompletionRequest) -> tuple[str, int]:
    """(text the predictor scores, estimated prompt tokens)."""
    if isinstance(req, ChatRequest):
        texts = [_text_of(m.content) for m in req.messages]
        # Chat templates add a few tokens of role markers per message.
        tokens = sum(estimate_tokens(t) + 4 for t in texts) + 2
        last_user = next((t for m, t in zip(reversed(req.messages), reversed(texts), strict=True)
                          if m.role == "user"), texts[-1])
        return last_user, tokens
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    text = "\n".join(prompts)
    return text, estimate_tokens(text)


def route_request(
    req: ChatRequest | CompletionRequest, constraints: Constraints, expected_output_tokens: int
) -> RouteRequest:
    prompt, tokens = prompt_and_tokens(req)
    max_tokens = req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        max_tokens = req.max_completion_tokens
    return RouteRequest(
        prompt=prompt,
        prompt_tokens=tokens,
        max_tokens=max_tokens,
        expected_output_tokens=expected_output_tokens,
        constraints=constraints,
    )
