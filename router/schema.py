"""The request bodies the router accepts, as documented pydantic models (validation and OpenAPI schema).

The router validates what it can at the edge, before any upstream call: types and ranges of the OpenAI
fields (OpenAI's documented bounds), message roles and content parts, tool definitions. A field the
router does not know passes through to the target unchanged (vLLM's extra samplers such as `top_k`); if
the target refuses it, the refusal is a 400 naming the field (router.failures). `routing` is ours and
strict. Limits that depend on configuration (n, max_tokens against the context window, nesting depth)
are checked by router.plan and router.api with `limits`.

Unions are tagged with callables whose tags contain '=' (e.g. 'role=user') so that error locations can
drop them (router.parse) and error messages never echo a value (pydantic's own tag errors would).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

_OPEN = ConfigDict(extra="allow")  # top level: unknown fields pass through to the target
_CLOSED = ConfigDict(extra="forbid")  # inside messages, tools, routing: a typo is a 400 naming it

INT64 = 2**63 - 1
ROLES = ("system", "developer", "user", "assistant", "tool")


class Routing(BaseModel):
    """The `routing` object of a request body (contract): constraints on the target the router picks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_latency_ms: float | None = Field(default=None, gt=0, description="Latency bound in ms.")
    latency_metric: Literal["ttft", "e2e"] | None = Field(
        default=None, description="Which latency max_latency_ms bounds: time to first token or end to end."
    )
    min_quality: float | None = Field(default=None, ge=0, le=1, description="Least P(answer acceptable).")
    max_cost_usd: float | None = Field(default=None, ge=0, description="Most the request may cost, USD.")
    allow_fallback: bool | None = Field(default=None, description="May a proprietary API target answer.")
    allowed_targets: tuple[str, ...] | None = Field(
        default=None, description="Route only among these target ids (each must exist)."
    )


# -- content parts -------------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = _CLOSED
    type: Literal["text"]
    text: StrictStr


class ImageUrl(BaseModel):
    model_config = _CLOSED
    url: StrictStr
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = _CLOSED
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(BaseModel):
    model_config = _CLOSED
    data: StrictStr
    format: Literal["wav", "mp3"]


class AudioPart(BaseModel):
    model_config = _CLOSED
    type: Literal["input_audio"]
    input_audio: InputAudio


class RefusalPart(BaseModel):
    model_config = _CLOSED
    type: Literal["refusal"]
    refusal: StrictStr


def _tag(key: str) -> Any:
    def get(v: Any) -> str | None:
        value = v.get(key) if isinstance(v, dict) else getattr(v, key, None)
        return f"{key}={value}" if isinstance(value, str) else None

    return get


def _by(key: str, what: str, allowed: str) -> Discriminator:
    # Our own message: pydantic's tag errors quote the value the client sent.
    return Discriminator(_tag(key), custom_error_type="invalid_tag",
                         custom_error_message=f"{key}: {what} {key} must be one of {allowed}")


UserPart = Annotated[
    Annotated[TextPart, Tag("type=text")] | Annotated[ImagePart, Tag("type=image_url")]
    | Annotated[AudioPart, Tag("type=input_audio")],
    _by("type", "content part", "text, image_url, input_audio"),
]
AssistantPart = Annotated[
    Annotated[TextPart, Tag("type=text")] | Annotated[RefusalPart, Tag("type=refusal")],
    _by("type", "content part", "text, refusal"),
]
TextOnlyPart = TextPart


# -- messages ---------------------------------------------------------------------------------------
class _Message(BaseModel):
    model_config = _CLOSED
    name: StrictStr | None = Field(default=None, max_length=256, description="Participant name.")


class SystemMessage(_Message):
    role: Literal["system"]
    content: StrictStr | list[TextOnlyPart]


class DeveloperMessage(_Message):
    role: Literal["developer"]
    content: StrictStr | list[TextOnlyPart]


class UserMessage(_Message):
    role: Literal["user"]
    content: StrictStr | list[UserPart]


class FunctionCall(BaseModel):
    model_config = _CLOSED
    name: StrictStr
    arguments: StrictStr = Field(description="The call's arguments as a JSON string.")


class ToolCall(BaseModel):
    model_config = _CLOSED
    id: StrictStr
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: StrictStr | list[AssistantPart] | None = Field(
        default=None, description="May be null only when tool_calls carries the turn."
    )
    tool_calls: list[ToolCall] | None = None
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.refusal is None:
            raise ValueError("content: required unless tool_calls is given")
        return self


class ToolMessage(_Message):
    role: Literal["tool"]
    content: StrictStr | list[TextOnlyPart]
    tool_call_id: StrictStr


Message = Annotated[
    Annotated[SystemMessage, Tag("role=system")] | Annotated[DeveloperMessage, Tag("role=developer")]
    | Annotated[UserMessage, Tag("role=user")] | Annotated[AssistantMessage, Tag("role=assistant")]
    | Annotated[ToolMessage, Tag("role=tool")],
    _by("role", "message", ", ".join(ROLES)),
]


# -- tools ------------------------------------------------------------------------------------------
class FunctionDef(BaseModel):
    model_config = _CLOSED
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Function name.")
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of the arguments.")
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = _CLOSED
    type: Literal["function"]
    function: FunctionDef


class ToolChoiceFunction(BaseModel):
    model_config = _CLOSED
    name: StrictStr


class NamedToolChoice(BaseModel):
    model_config = _CLOSED
    type: Literal["function"]
    function: ToolChoiceFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool | None = Field(
        default=None, description="End the stream with a usage chunk (`choices: []`); off by default."
    )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Prob = Annotated[StrictFloat, Field(ge=0, le=1)]
Penalty = Annotated[StrictFloat, Field(ge=-2, le=2)]
Tokens = Annotated[StrictInt, Field(ge=1, le=INT64)]


# -- bodies -----------------------------------------------------------------------------------------
class _Common(BaseModel):
    model_config = _OPEN

    model: StrictStr = Field(..., min_length=1, max_length=256, description="'auto' to route, or a target id.")
    stream: StrictBool = Field(default=False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Only with stream: true.")
    max_tokens: Tokens | None = Field(
        default=None, description="Most tokens to generate; prompt + max_tokens must fit the context window."
    )
    temperature: Annotated[StrictFloat, Field(ge=0, le=2)] | None = None
    top_p: Annotated[StrictFloat, Field(gt=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1)] | None = Field(default=None, description="Choices; at most limits.max_n.")
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[StrictInt, Field(ge=-INT64 - 1, le=INT64)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=32)] | None = None
    logit_bias: dict[StrictStr, Annotated[StrictFloat, Field(ge=-100, le=100)]] | None = None
    user: StrictStr | None = None
    routing: Routing | None = Field(default=None, description="Routing constraints (the router's extension).")

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Common:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed with stream: true")
        return self


class ChatRequest(_Common):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: Tokens | None = Field(default=None, description="Newer name of max_tokens.")
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = Field(
        default=None, description="Functions the model may call; routed only to targets with supports_tools."
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice: needs tools")
        return self

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Common):
    """POST /v1/completions."""

    prompt: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1)
    ] = Field(..., description="Text (or token ids) to continue; never empty.")
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    suffix: StrictStr | None = None
    best_of: Annotated[StrictInt, Field(ge=1)] | None = Field(default=None, description="At most limits.max_n.")

    def uses_tools(self) -> bool:
        return False
