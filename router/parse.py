"""Request parsing: the OpenAI request subset the router reads, constraints, token estimates.

Unknown top-level fields are allowed and passed to the target unchanged (samplers, tools, ...);
`routing` is ours, so it is validated strictly and an unknown field there is a 400 naming it.
Error messages name the field and the problem, never the value (it may be prompt text).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from policies.types import Constraints, RouteRequest
from router.failures import FieldError
from router.schema import ChatRequest, CompletionRequest, Routing

__all__ = ["ChatRequest", "CompletionRequest", "Endpoint", "Routing", "parse_body", "merge_constraints",
           "prompt_and_tokens", "route_request", "routing_from_headers", "estimate_tokens"]

Endpoint = Literal["chat", "completions"]


_HEADER_FIELDS = {
    "x-router-max-latency-ms": "max_latency_ms",
    "x-router-latency-metric": "latency_metric",
    "x-router-min-quality": "min_quality",
    "x-router-max-cost-usd": "max_cost_usd",
    "x-router-allow-fallback": "allow_fallback",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# Parts of a pydantic error location that are union branches, not fields ('str', 'role=user',
# 'list[tagged-union[...]]', 'constrained-str', model names).
_BRANCH = re.compile(r"^(str|int|float|bool|none|list|dict)$|[=\[\]-]|^[A-Z]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,39}$")
# Fields whose keys are the client's own (a logit_bias token, a JSON schema): a location stops there.
_FREE_KEYS = {"logit_bias", "parameters", "json_schema", "metadata", "stream_options", "response_format"}


def _path(loc: tuple[Any, ...], extra: bool) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        last = i == len(loc) - 1
        if not last and _BRANCH.search(part):
            continue
        if last and extra:  # the client's own key: name it only if it looks like a field name
            part = part if _NAME.match(part) else "(unnamed)"
        elif _BRANCH.search(part):
            continue
        out += f".{part}" if out else part
        if part in _FREE_KEYS:
            break
    return out


def field_problems(e: ValidationError) -> list[tuple[str, str]]:
    """(field path, problem) per error, most specific first; never the value the client sent."""
    found: dict[str, list[str]] = {}
    for err in e.errors(include_input=False, include_url=False):
        extra = err["type"] == "extra_forbidden"
        path = _path(tuple(err["loc"]), extra)
        msg = "unknown field" if extra else str(err["msg"]).removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")  # our validators say "field: problem"
        if sep and _NAME.match(head) and " " not in head:
            path, msg = (f"{path}.{head}" if path else head), rest
        if msg.startswith("Input should be "):
            msg = "must be " + msg.removeprefix("Input should be ")
        elif msg == "Field required":
            msg = "required"
        found.setdefault(path, []).append(msg)
    # A union branch of the wrong type reports at the parent path; the branch that fits goes deeper.
    paths = [p for p in found if not any(q != p and q.startswith(p) and q[len(p):][:1] in ".[" for q in found)]
    return [(p or "body", " or ".join(dict.fromkeys(found[p])).replace(" or must be ", " or ")) for p in paths]


def _raise(e: ValidationError, what: str = "invalid request") -> None:
    problems = field_problems(e)
    text = "; ".join(f"{p}: {m}" for p, m in problems[:5])
    raise FieldError(f"{what}: {text}", param=problems[0][0] if problems else None) from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _at(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p)) if _NAME.match(str(p)) else ".(key)"
    return out or "body"


def _first_problem(value: Any, max_depth: int, paths: bool) -> tuple[str, tuple[Any, ...]] | None:
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return "surrogate", path
            continue
        if not isinstance(v, dict | list):
            continue
        if depth >= max_depth:
            return "depth", path
        if isinstance(v, dict):
            for k, item in v.items():
                if _SURROGATE.search(k):
                    return "surrogate", path
                stack.append((item, depth + 1, (*path, k) if paths else path))
        else:
            stack.extend((item, depth + 1, (*path, i) if paths else path) for i, item in enumerate(v))
    return None


def check_json(value: Any, max_depth: int) -> None:
    """Nesting depth and Unicode of a parsed body, before anything recursive (pydantic, pickling) sees it.

    JSON's `\\ud800` escapes decode to lone surrogates, which no engine can encode (vLLM raised TypeError):
    a 400 naming the field. Iterative on purpose: the check must not recurse on what it guards against.
    Paths are only built for the (rare) bad body, on a second pass.
    """
    if _first_problem(value, max_depth, paths=False) is None:
        return
    kind, path = _first_problem(value, max_depth, paths=True) or ("depth", ())
    if kind == "surrogate":
        raise FieldError(f"{_at(path)}: contains a lone UTF-16 surrogate (not valid Unicode)", param=_at(path),
                         code="invalid_unicode")
    raise FieldError(f"{_at(path[:1])}: nested deeper than {max_depth} levels", param=_at(path[:1]),
                     code="nesting_too_deep")


def parse_body(body: Any, endpoint: Endpoint) -> ChatRequest | CompletionRequest:
    if not isinstance(body, dict):
        raise FieldError("request body must be a JSON object")
    cls = ChatRequest if endpoint == "chat" else CompletionRequest
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        _raise(e)
        raise  # unreachable: _raise raises


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
                raise FieldError(f"header {name}: expected true or false", param=name)
            raw[field] = low in _TRUE
        else:
            raw[field] = value
    if not raw:
        return None
    try:
        return Routing.model_validate(raw)
    except ValidationError as e:
        problems = [(p, m) for p, m in field_problems(e)]
        by_field = {f: n for n, f in _HEADER_FIELDS.items()}
        text = "; ".join(f"header {by_field.get(p, p)}: {m}" for p, m in problems[:5])
        raise FieldError(f"invalid routing header: {text}",
                         param=by_field.get(problems[0][0]) if problems else None) from None


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


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(t for p in content if isinstance(t := getattr(p, "text", None), str))


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
    prompts: list[Any] = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if prompts and isinstance(prompts[0], int):  # one prompt as token ids
        prompts = [prompts]
    texts = [p for p in prompts if isinstance(p, str)]
    ids = sum(len(p) for p in prompts if isinstance(p, list))  # token-id prompts: exact counts, no text
    text = "\n".join(texts)
    return text, estimate_tokens(text) + ids


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
