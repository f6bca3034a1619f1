"""The OpenAI-compatible HTTP surface: thin handlers and the one place errors become HTTP responses.

`make_app(service_getter)` takes a callable rather than a service so that a Ray Serve ingress can
build its `RouterService` in the replica's `__init__` (after the app object exists) and the handlers
look it up per request.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router import openapi
from router.errors import (
    BadRequest,
    InternalError,
    NotFound,
    PayloadTooLarge,
    RouterError,
)
from router.limits import LimitsConfig
from router.parse import check_json
from router.schema import ChatRequest, CompletionRequest

logger = logging.getLogger(__name__)

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Service(Protocol):
    """What the handlers need of `router.service.RouterService`."""

    limits: LimitsConfig

    async def chat(self, body: dict[str, Any], headers: Any, endpoint: Any = "chat") -> Any: ...

    async def chat_stream(self, body: dict[str, Any], headers: Any, endpoint: Any = "chat") -> Any: ...

    def models(self, headers: Any) -> dict[str, Any]: ...

    async def usage(self, headers: Any) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...


def error_response(e: BaseException) -> JSONResponse:
    """Map any exception to an OpenAI-style error response (the single translation point)."""
    if not isinstance(e, RouterError):
        # Only the class and where it happened: messages can echo request content.
        logger.error(
            "unhandled %s at %s", type(e).__name__, "".join(traceback.format_tb(e.__traceback__)[-3:])
        )
        e = InternalError("internal error")
    # Errors re-raised by Ray are subclasses of the cause's class: read attributes defensively.
    status = int(getattr(e, "status", 500))
    message = getattr(e, "message", None) or "upstream error"
    body: dict[str, Any] = {"error": {"message": message, "type": e.type, "code": e.code}}
    param = getattr(e, "param", None)
    if isinstance(param, str):  # OpenAI's `param`: the request field at fault (a name, never a value)
        body["error"]["param"] = param
    headers = {"x-router-target": "none", "x-router-reason": e.code, **getattr(e, "headers", {})}
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limits: LimitsConfig) -> dict[str, Any]:
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
        if too_big:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:  # chunked bodies carry no Content-Length
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    try:
        body = json.loads(buf)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        pos = f" at position {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
        raise BadRequest(f"malformed JSON{pos}", code="invalid_json") from None
    except RecursionError:  # '[' * 100000: the C parser gives up before our depth check can run
        raise BadRequest(f"JSON nested deeper than {limits.max_json_depth} levels", code="nesting_too_deep") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    check_json(body, limits.max_json_depth)
    return body


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    except Exception as e:  # the service turns upstream failures into error chunks; this is a bug path
        logger.error("stream failed: %s", type(e).__name__)
        yield b"data: " + json.dumps(InternalError("internal error").body()).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


class _ClosingStream(StreamingResponse):
    """Closes the service's stream however the response ends: Starlette never closes body iterators,
    and a client gone before the first chunk is pulled would leave the upstream call, its charge and
    its span open until garbage collection."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], **kw: Any) -> None:
        super().__init__(_sse(chunks), **kw)
        self._chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._chunks, "aclose", None)
            if close is not None:
                await close()


def _guard(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Every failure of a handler goes through error_response (not Starlette's 500 page)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as e:
            return error_response(e)

    wrapped.__name__ = handler.__name__
    return wrapped


def make_app(service_getter: Callable[[], Service], *, title: str = "llm-router") -> FastAPI:
    """The FastAPI app; `service_getter()` is called per request (cheap: return a stored object)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None)

    async def completion(request: Request, endpoint: str) -> Response:
        service = service_getter()
        body = await _read_body(request, service.limits)
        if body.get("stream") is True:
            chunks, headers = await service.chat_stream(body, request.headers, endpoint)
            return _ClosingStream(chunks, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})
        resp, headers = await service.chat(body, request.headers, endpoint)
        return JSONResponse(resp, headers=headers)

    @_guard
    async def chat_completions(request: Request) -> Response:
        return await completion(request, "chat")

    @_guard
    async def completions(request: Request) -> Response:
        return await completion(request, "completions")

    @_guard
    async def list_models(request: Request) -> Response:
        return JSONResponse(service_getter().models(request.headers))

    @_guard
    async def usage(request: Request) -> Response:  # the calling key's own spend only
        return JSONResponse(await service_getter().usage(request.headers))

    @_guard
    async def healthz(request: Request) -> Response:
        service = service_getter()
        health = service.health()
        states = set((health.get("targets") or {}).values())
        if health.get("status") != "ok" and "starting" in states:  # models still loading: say so, and when to retry
            health["status"] = "starting"
            return JSONResponse(health, headers={"retry-after": str(service.limits.starting_retry_after_s)})
        return JSONResponse(health)

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"],
                      openapi_extra=openapi.operation(ChatRequest, "Chat completion, routed ('auto') or pinned"))
    app.add_api_route("/v1/completions", completions, methods=["POST"],
                      openapi_extra=openapi.operation(CompletionRequest, "Text completion, routed or pinned"))
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/usage", usage, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])

    @app.exception_handler(RouterError)
    async def _router_error(_: Request, e: RouterError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(BadRequest("invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            return error_response(NotFound("no such route", code="not_found"))
        err = RouterError(str(e.detail), code="http_error")
        err.status, err.type = e.status_code, "invalid_request_error"
        return error_response(err)

    openapi.install(app)
    return app
