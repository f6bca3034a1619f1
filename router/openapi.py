"""The app's OpenAPI document: the request bodies the handlers read (router/schema.py) and the error body.

The handlers read the raw body themselves (size limit while reading, nesting and Unicode checks before
any parser recursion, errors that name fields and never values), so FastAPI cannot infer the bodies from
their signatures; the models are attached here as documented request schemas instead. Schema-driven
fuzzers (tests/reliability/test_schema_fuzz.py) generate requests from this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from router.schema import ChatRequest, CompletionRequest

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong; names fields, never their values.")
    type: str = Field(description="invalid_request_error, authentication_error, upstream_error, ...")
    code: str = Field(description="Short machine-readable code, e.g. context_length_exceeded.")
    param: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorBody(BaseModel):
    """Every non-2xx answer (OpenAI's error shape)."""

    error: ErrorDetail


def operation(model: type[BaseModel], summary: str) -> dict[str, Any]:
    """`openapi_extra` of a POST route whose JSON body is `model`."""
    error = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}}}
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(model=model.__name__)}}}},
        "responses": {
            "200": {"description": "The answer (JSON), or server-sent events with `stream: true`."},
            **{code: {"description": desc, **error} for code, desc in (
                ("400", "Invalid request (names the field)"), ("401", "Missing or invalid key"),
                ("403", "Target not allowed for the key"), ("404", "Unknown model"), ("413", "Body too large"),
                ("422", "No target meets the constraints"), ("429", "Budget exhausted"),
                ("502", "Target failed"), ("503", "No healthy target, or starting"), ("504", "Target timed out"),
            )},
        },
    }


def install(app: FastAPI) -> None:
    """Make `app.openapi()` include the request and error schemas the operations refer to."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema(
                [(ChatRequest, "validation"), (CompletionRequest, "validation"), (ErrorBody, "validation")],
                ref_template=_REF,
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
