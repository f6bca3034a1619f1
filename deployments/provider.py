"""The proprietary-API target: any OpenAI-compatible provider behind timeouts, retries and a breaker.

- `ProviderConfig`: one provider (the app config embeds a list of these, in fallback order).
- `ProviderClient`: a `TargetClient` over an `httpx.AsyncClient` (transport injectable for tests). The
  router ingress holds one per provider in each of its replicas and calls it in-process: no Serve hop
  in front of the HTTP call (BENCHMARKS.md "API fallback: handle hop vs in-ingress client"). Each
  ingress replica has its own breaker, so each one stops calling a failing provider on its own.
- `AiohttpTransport`: the requests' transport (httpx's API over aiohttp's connection pool; httpx's own
  pool spent ~22% of the ingress replica's CPU at c=32 checking every pooled socket on every request).
- `ProviderClient.probe()`: the health check, on a second small connection pool of its own with its
  own timeout, so it is never queued behind request traffic (the ingress runs it in the background).

Retries happen only before anything was passed on to the caller; the per-request deadline
(`timeouts.total_s`) bounds everything, backoff sleeps and Retry-After waits included. The API key
lives only in the outgoing Authorization header: never in config, logs, reprs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from deployments.breaker import BreakerConfig, CircuitBreaker
from deployments.contracts import (
    BadGateway,
    BadRequest,
    NoHealthyTarget,
    StreamInterrupted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from deployments.provider_sse import END, Failure, sse_events
from deployments.retry import RetryConfig, backoff_s, parse_retry_after
from policies.types import LatencyPrior, Target

logger = logging.getLogger(__name__)
T = TypeVar("T")
_FROZEN = ConfigDict(frozen=True, extra="forbid")
_PATHS = {"chat": "chat/completions", "completions": "completions"}
_ROUTER_ONLY_KEYS = ("routing",)  # our own request extensions; providers reject unknown fields
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class TimeoutConfig(BaseModel):
    """Time limits for one request to the provider."""

    model_config = _FROZEN

    connect_s: float = Field(default=5.0, gt=0, description="TCP/TLS connect timeout per attempt, seconds.")
    read_s: float = Field(
        default=30.0, gt=0, description="Longest wait for the next bytes (first token included), seconds."
    )
    total_s: float = Field(
        default=120.0, gt=0, description="Per-request deadline over all attempts, waits and the whole stream."
    )
    health_s: float = Field(
        default=5.0, gt=0, description="Longest wait for one health probe (connect and answer), seconds."
    )


class ProviderConfig(BaseModel):
    """One OpenAI-compatible provider model, reachable as target `id`."""

    model_config = _FROZEN

    id: str = Field(..., min_length=1, description="Target id clients and policies use for this model.")
    base_url: str = Field(..., description="Provider API root, e.g. https://api.openai.com/v1.")
    model: str = Field(..., min_length=1, description="The provider's own model name, sent upstream.")
    api_key_env: str = Field(
        ..., description="NAME of the environment variable holding the API key (never the key itself)."
    )
    input_price_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M input tokens.")
    output_price_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M output tokens.")
    context_window: int = Field(
        default=128_000, ge=16, description="Max prompt + output tokens the model takes."
    )
    quality_prior: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="P(answer acceptable) when no learned predictor covers the prompt.",
    )
    latency: LatencyPrior = Field(
        default_factory=lambda: LatencyPrior(ttft_ms=500, tpot_ms=15, max_concurrency=64),
        description="Cold-start latency prior the policy uses until calls are observed.",
    )
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig, description="Time limits.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry and backoff settings.")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breaker settings.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent on every request (not Authorization)."
    )
    supports_tools: bool = Field(
        True, description="The provider's model takes `tools` (tool calling); set false for one that does not."
    )
    max_connections: int = Field(
        default=100, ge=1, description="Most requests in flight to the provider per ingress replica; more wait "
        "up to timeouts.connect_s for a connection (health probes have a connection of their own).",
    )
    health_path: str | None = Field(
        default="models", description="Path under base_url the health probe GETs (with the key); null: no "
        "probe, the breaker alone decides. A timeout, connection error, 5xx, 401 or 403 marks it down.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("api_key_env must be an environment variable NAME like OPENAI_API_KEY")
        return v

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, v: dict[str, str]) -> dict[str, str]:
        if any(k.lower() in ("authorization", "proxy-authorization") for k in v):
            raise ValueError("put the key in the env var named by api_key_env, not in headers")
        return v


    def target(self) -> Target:
        """The policy-side view of this provider (kind="api")."""
        return Target(
            id=self.id,
            kind="api",
            input_price_per_mtok=self.input_price_per_mtok,
            output_price_per_mtok=self.output_price_per_mtok,
            context_window=self.context_window,
            quality_prior=self.quality_prior,
            latency=self.latency,
            supports_tools=self.supports_tools,
        )


class _AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it; closing it early closes the connection."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("read timed out") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
            raise httpx.ReadError(type(e).__name__) from None

    async def aclose(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()  # read to the end: the connection goes back to the pool
        else:
            self._resp.close()  # abandoned mid-body: drop the connection (the provider sees it close)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport over aiohttp's connection pool (`max_connections` at most), for the requests.

    httpx does everything above the transport as before (URLs, headers, JSON, content decoding, timeouts
    per request, MockTransport in tests); aiohttp only holds the connections and moves the bytes.
    TLS uses httpx's default context (certifi, SSL_CERT_FILE), proxies come from the environment as
    with httpx. aiohttp errors are raised as the httpx errors ProviderClient maps (names only, never
    their text). The session is made on first use, in the event loop that uses it.
    """

    def __init__(self, max_connections: int = 100) -> None:
        self._limit = max_connections
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=httpx.create_ssl_context())
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=True,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        t = request.extensions.get("timeout") or {}
        pool, connect = t.get("pool"), t.get("connect")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=t.get("read"),
            connect=None if pool is None or connect is None else pool + connect,  # pool wait + connect
        )
        try:
            resp = await self._open().request(
                request.method, str(request.url), headers=request.headers.multi_items(), data=request.content,
                allow_redirects=False, timeout=timeout,
            )
        except aiohttp.ConnectionTimeoutError:
            raise httpx.ConnectTimeout("connect timed out") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise httpx.ReadTimeout("read timed out") from None
        except aiohttp.ClientConnectorError as e:
            raise httpx.ConnectError(type(e).__name__) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as e:
            raise httpx.RemoteProtocolError(type(e).__name__) from None
        except aiohttp.ClientError as e:
            raise httpx.ReadError(type(e).__name__) from None
        return httpx.Response(resp.status, headers=resp.raw_headers, stream=_AiohttpBody(resp))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ProviderClient:
    """`TargetClient` for one provider. One instance per event loop (a Serve replica).

    clock/wall_clock/sleep/rng are seams for tests (deadlines, HTTP-date Retry-After, backoff, jitter).
    """

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        self._key = SecretStr(api_key) if api_key else None
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker, clock)
        t = config.timeouts
        self._http = httpx.AsyncClient(
            base_url=config.base_url + "/",
            transport=transport or AiohttpTransport(config.max_connections),
            headers=config.headers,
            timeout=httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.connect_s),
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=min(20, config.max_connections)),
        )
        # The health probe's own pool: a saturated request pool (or a provider slow to answer requests
        # on their connections) never delays it; its timeout bounds connect, pool wait and answer.
        self._probe_http = httpx.AsyncClient(
            base_url=config.base_url + "/",
            transport=transport,
            headers=config.headers,
            timeout=httpx.Timeout(t.health_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.probe_failure: str | None = None  # why the last health probe failed; None: it passed (or none ran)

    @classmethod
    def from_env(cls, config: ProviderConfig, **kwargs: Any) -> ProviderClient:
        """The client with its key read from the env var the config names (unset: reports unhealthy)."""
        key = os.environ.get(config.api_key_env) or None
        if key is None:
            logger.warning("target %s: env var %s is not set; reporting unhealthy", config.id, config.api_key_env)
        return cls(config, key, **kwargs)

    def __repr__(self) -> str:
        key = "***" if self._key else "unset"
        return f"ProviderClient(id={self.config.id!r}, model={self.config.model!r}, api_key={key})"

    __str__ = __repr__

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._probe_http.aclose()

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- health -----------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.breaker.state

    @property
    def healthy(self) -> bool:
        """Routable: a key, a breaker not open and no failed health probe. A read: changes no state."""
        return self._key is not None and self.breaker.healthy and self.probe_failure is None

    def health(self) -> dict[str, Any]:
        snap = self.breaker.snapshot()
        reason = None
        if self._key is None:
            reason = f"API key env var {self.config.api_key_env} is not set"
        elif snap["state"] == "open":
            reason = f"circuit open after failures ({snap['last_failure']})"
        elif self.probe_failure is not None:
            reason = self.probe_failure
        return {"target": self.config.id, **snap, "healthy": self.healthy, "probe_failure": self.probe_failure,
                "reason": reason}

    async def probe(self) -> bool | None:
        """One health probe: GET `health_path` on the probe's own connection, bounded by `timeouts.health_s`.

        True: the provider answered (2xx-4xx other than 401/403: a 404 or 429 still shows it is up);
        False: timeout, connection error, 5xx, 401/403 (recorded in `probe_failure`, read by `healthy`);
        None: no probe configured or no key. Never touches the breaker: its state moves with requests only.
        """
        if self._key is None or self.config.health_path is None:
            return None
        limit = self.config.timeouts.health_s
        failure: str | None = None
        try:
            async with asyncio.timeout(limit):
                resp = await self._probe_http.get(self.config.health_path, headers=self._auth())
        except (TimeoutError, httpx.TimeoutException):
            failure = f"health probe got no answer within {limit:g}s"
        except httpx.TransportError as e:
            failure = f"health probe: connection failed ({type(e).__name__})"
        else:
            if resp.status_code >= 500 or resp.status_code in (401, 403):
                failure = f"health probe answered HTTP {resp.status_code}"
        if failure != self.probe_failure:
            if failure is None:
                logger.warning("target %s: health probe passes again", self.config.id)
            else:
                logger.warning("target %s: %s; not routing to it until a probe passes", self.config.id, failure)
        self.probe_failure = failure
        return failure is None

    # -- TargetClient -----------------------------------------------------------------------------
    async def complete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        path, payload = self._path(endpoint), self._payload(body, stream=False)
        deadline = self._clock() + self.config.timeouts.total_s
        data = await self._with_retries(lambda: self._post_json(path, payload, deadline), deadline)
        self.breaker.record_success()
        data["model"] = self.config.id
        return data

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        path, payload = self._path(endpoint), self._payload(body, stream=True)
        deadline = self._clock() + self.config.timeouts.total_s
        resp, events, chunk = await self._with_retries(
            lambda: self._open_stream(path, payload, deadline), deadline
        )
        verdict: str | None = None  # "ok" | failure reason; None = caller went away
        try:
            while chunk is not END:
                chunk["model"] = self.config.id
                yield chunk
                try:
                    async with asyncio.timeout(self._remaining(deadline)):
                        chunk = await anext(events, END)
                except (TimeoutError, httpx.TimeoutException):
                    verdict = "timeout mid-stream"
                    raise StreamInterrupted(self._msg("stream timed out after output began")) from None
                except (Failure, httpx.TransportError) as e:
                    verdict = e.reason if isinstance(e, Failure) else f"connection lost ({type(e).__name__})"
                    msg = self._msg(f"stream broke after output began: {verdict}")
                    raise StreamInterrupted(msg) from None
            verdict = "ok"
        finally:
            await events.aclose()
            await resp.aclose()
            if verdict == "ok":
                self.breaker.record_success()
            elif verdict is not None:
                self.breaker.record_failure(verdict)
            else:
                self.breaker.release()

    # -- attempts ---------------------------------------------------------------------------------
    async def _with_retries(self, attempt_fn: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run attempts until one succeeds; the breaker permit of the successful one stays taken."""
        if self._key is None:
            raise NoHealthyTarget(self._msg(f"API key env var {self.config.api_key_env} is not set"))
        retry = self.config.retry
        last: Failure | None = None
        for attempt in range(retry.max_retries + 1):
            if not self.breaker.acquire():
                if last is not None:
                    raise self._error(last, attempt)
                raise NoHealthyTarget(self._msg(f"circuit open; retry in {self.breaker.retry_in_s():.1f}s"))
            try:
                return await attempt_fn()
            except Failure as f:
                last = f
                if f.health_failure:
                    self.breaker.record_failure(f.reason)
                else:
                    self.breaker.record_success()  # the provider is up; it refused this request
            except BaseException:
                self.breaker.release()
                raise
            if not last.retryable or attempt == retry.max_retries:
                raise self._error(last, attempt + 1)
            if last.retry_after is not None:
                delay = last.retry_after
                if delay > retry.retry_after_max_s:
                    raise self._error(last, attempt + 1)
            else:
                delay = backoff_s(attempt, retry, self._rng)
            if delay >= deadline - self._clock():
                raise self._error(last, attempt + 1, deadline_hit=True)
            logger.warning(
                "target %s: attempt %d failed (%s); retrying in %.2fs",
                self.config.id, attempt + 1, last.reason, delay,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post_json(self, path: str, payload: dict[str, Any], deadline: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                resp = await self._http.post(path, json=payload, headers=self._auth())
        except (TimeoutError, httpx.TimeoutException) as e:
            raise Failure("timeout", f"timed out ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise Failure("network", f"connection failed ({type(e).__name__})") from None
        self._check_status(resp)
        try:
            data = resp.json()
        except ValueError:
            raise Failure("protocol", "response body is not JSON") from None
        if not isinstance(data, dict):
            raise Failure("protocol", "response body is not a JSON object")
        return data

    async def _open_stream(self, path: str, payload: dict[str, Any], deadline: float) -> tuple[
        httpx.Response, AsyncGenerator[dict[str, Any], None], Any
    ]:
        """Send the request and read up to the first chunk: everything here may still be retried."""
        request = self._http.build_request("POST", path, json=payload, headers=self._auth())
        resp: httpx.Response | None = None
        events: AsyncGenerator[dict[str, Any], None] | None = None
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                resp = await self._http.send(request, stream=True)
                if resp.status_code >= 400:
                    await resp.aread()
                    self._check_status(resp)
                events = sse_events(resp.aiter_lines())
                first = await anext(events, END)
            return resp, events, first
        except BaseException as e:
            if events is not None:
                await events.aclose()
            if resp is not None:
                await resp.aclose()
            if isinstance(e, (TimeoutError, httpx.TimeoutException)):
                raise Failure("timeout", f"timed out before the first chunk ({type(e).__name__})") from None
            if isinstance(e, httpx.TransportError):
                raise Failure("network", f"connection failed ({type(e).__name__})") from None
            raise

    # -- helpers ----------------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        assert self._key is not None
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise Failure("timeout", "request deadline passed")
        return remaining

    def _path(self, endpoint: str) -> str:
        if endpoint not in _PATHS:
            raise BadRequest(f"unknown endpoint {endpoint!r}; expected 'chat' or 'completions'")
        return _PATHS[endpoint]

    def _payload(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        payload = {k: v for k, v in body.items() if k not in _ROUTER_ONLY_KEYS}
        payload["model"] = self.config.model
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return payload

    def _check_status(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status < 400:
            return
        if status == 429:
            after = parse_retry_after(resp.headers.get("retry-after"), self._wall_clock)
            raise Failure("rate_limited", "HTTP 429", status=429, retry_after=after)
        if status >= 500:
            after = parse_retry_after(resp.headers.get("retry-after"), self._wall_clock)
            raise Failure("server", f"HTTP {status}", status=status, retry_after=after)
        raise Failure("rejected", f"HTTP {status}", status=status, detail=self._provider_code(resp))

    def _provider_code(self, resp: httpx.Response) -> str | None:
        """The provider's short error code (e.g. context_length_exceeded), never its free text."""
        try:
            err = resp.json().get("error") or {}
            code = err.get("code") or err.get("type")
        except (ValueError, AttributeError):
            return None
        if not isinstance(code, str) or not _SAFE_CODE.match(code):
            return None
        if self._key and self._key.get_secret_value() in code:
            return None
        return code

    def _msg(self, text: str) -> str:
        return f"target {self.config.id}: {text}"

    def _error(self, f: Failure, attempts: int, *, deadline_hit: bool = False) -> UpstreamError:
        tail = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
        if deadline_hit:
            tail += " (no time left before the request deadline)"
        if f.kind == "timeout":
            return UpstreamTimeout(self._msg(f"provider {f.reason}{tail}"))
        if f.kind == "rate_limited":
            headers = {}
            if f.retry_after is not None:
                headers["Retry-After"] = str(max(1, math.ceil(f.retry_after)))
            wait = f"; Retry-After {f.retry_after:.0f}s" if f.retry_after is not None else ""
            msg = self._msg(f"provider rate-limited us (429){wait}{tail}")
            return UpstreamRateLimited(msg, headers=headers)
        if f.kind == "rejected":
            code = f" ({f.detail})" if f.detail else ""
            return UpstreamRejected(self._msg(f"provider rejected the request with HTTP {f.status}{code}"))
        return BadGateway(self._msg(f"provider failed: {f.reason}{tail}"))
