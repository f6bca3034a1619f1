"""Who caused a failed upstream call: the request or the target.

Only target faults (a dead replica, an engine or provider 5xx, a timeout the target itself overran) may
count towards cool-downs and breakers and move the request to an alternate. A request the target
refuses (an engine 4xx, or an exception the engine raises while reading the request: pydantic's
ValidationError, ValueError, TypeError such as a lone surrogate that cannot be encoded) would be
refused by every other target too, so it becomes a 400 that names the request field and never the
target's words: those can quote prompt text and name engine flags the client cannot set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from router.errors import BadGateway, BadRequest, ClientError, RouterError

# Raised while the engine builds or checks the request; pydantic's ValidationError is a ValueError.
_REQUEST_CAUSED = (ValueError, TypeError, UnicodeError, OverflowError)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FieldError(BadRequest):
    """A 400 about one request field; `param` is the field's name (OpenAI's error `param`)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, headers=headers)
        self.param = param


def _cause(e: BaseException) -> BaseException:
    # Ray re-raises a replica's exception as a RayTaskError; when it cannot derive a class from the
    # cause's class (pydantic's ValidationError cannot be subclassed) the original is only in `.cause`.
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def is_request_caused(e: BaseException) -> bool:
    """Did the request make the target raise `e` (as opposed to the target failing)?"""
    if isinstance(e, ClientError):
        return True
    if isinstance(e, RouterError):
        return False
    return isinstance(e, _REQUEST_CAUSED) or isinstance(_cause(e), _REQUEST_CAUSED)


def _loc_param(e: BaseException, body: Mapping[str, Any]) -> str | None:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return None
    try:
        locs = [tuple(err.get("loc") or ()) for err in errors()]
    except Exception:  # not pydantic's errors() after all
        return None
    for loc in locs:
        if loc and isinstance(loc[0], str) and loc[0] in body:
            param = loc[0]
            if len(loc) > 1 and isinstance(loc[1], int):
                param += f"[{loc[1]}]"
                if len(loc) > 2 and isinstance(loc[2], str) and _IDENT.match(loc[2]):
                    param += f".{loc[2]}"
            return param
    return None


def _named_param(text: str, body: Mapping[str, Any]) -> str | None:
    """The first top-level request field the target's message names (a field name, never a value)."""
    low = text.lower()
    if "tool" in low and ("tools" in body or "tool_choice" in body):
        return "tools" if "tools" in body else "tool_choice"
    # `model` is in every body and in many engine messages ("this model's ..."): never the culprit here.
    hits = [(m.start(), k) for k in body if isinstance(k, str) and k != "model" and _IDENT.match(k)
            for m in [re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", text)] if m]
    return min(hits)[1] if hits else None


def rejected(tid: str, e: BaseException, body: Mapping[str, Any]) -> FieldError:
    """The 400 for a request target `tid` refused; names the field when the target's error does."""
    cause = _cause(e)
    text = str(getattr(e, "message", "") or getattr(cause, "message", "") or cause).removeprefix("model engine: ")
    low = text.lower()
    if "context length" in low or "maximum context" in low or "max_model_len" in low:
        limit = "max_tokens" if "max_tokens" in body else "messages" if "messages" in body else "prompt"
        return FieldError(
            f"prompt plus '{limit}' exceeds the context window of '{tid}'", param=limit,
            code="context_length_exceeded",
        )
    param = _loc_param(cause, body) or _named_param(text, body)
    if param in ("tools", "tool_choice"):
        return FieldError(
            f"'{param}': target '{tid}' does not support tool calling (enable it per model in cluster.yaml: "
            "supports_tools: true with engine_kwargs enable_auto_tool_choice and tool_call_parser)",
            param=param, code="tools_not_supported",
        )
    if param:
        return FieldError(f"invalid value for '{param}' (rejected by target '{tid}')", param=param)
    return FieldError(f"target '{tid}' rejected the request as invalid")


def upstream_failure(tid: str, e: BaseException, body: Mapping[str, Any]) -> RouterError:
    """The error a failed call to `tid` with `body` stands for (request-caused → FieldError)."""
    if is_request_caused(e):
        return rejected(tid, e, body)
    if isinstance(e, RouterError):
        return e
    return BadGateway(f"target '{tid}' failed ({type(_cause(e)).__name__})")
