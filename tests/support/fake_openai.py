"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: the stand-in proprietary provider.

Endpoints: POST /v1/chat/completions, POST /v1/completions (both stream via SSE and non-stream),
GET /v1/models. Answers are deterministic: the first `max_tokens` words of `answer`; token counts are
whitespace words (prompt: all message contents, or the prompt). Streams send one chunk per word and,
when `stream_options.include_usage` is set, a final usage chunk, then `data: [DONE]`. Requests must
carry `Authorization: Bearer <api_key>` (401 otherwise; api_key=None accepts any).

In-process (a background thread with its own event loop)::

    from tests.support.fake_openai import FakeOpenAI
    with FakeOpenAI(api_key="sk-test", ttft_s=0.05, token_delay_s=0.01) as server:
        server.base_url                      # "http://127.0.0.1:<port>/v1"
        server.script("500", "429:2", "ok")  # the next three completion requests, in order
        server.mode = "ok"                   # behaviour once the script is used up
        ...
        server.request_count, server.requests[-1].headers, server.requests[-1].body
        server.completion_count, server.completions  # POST completions only (no GET /v1/models probes)
        server.clear()                       # forget recorded requests and the script

In a subprocess (e.g. for a Ray Serve app in another process)::

    python -m tests.support.fake_openai --port 8089 --api-key sk-test --ttft 0.05 --token-delay 0.01
    # prints "READY http://127.0.0.1:8089/v1" on stdout, serves until SIGTERM/SIGINT

    from tests.support.fake_openai import fake_openai_subprocess
    with fake_openai_subprocess(api_key="sk-test") as server:   # port=0 -> ephemeral
        server.base_url; server.script("500"); server.set_mode("ok"); server.requests

The subprocess handle has the same methods; it drives the server through `POST /_fake/control`
({"script": [...], "mode": ..., "ttft_s": .., "token_delay_s": .., "clear": true}) and reads
`GET /_fake/requests`. Those two paths need no key and are not recorded.

Behaviours (a string shorthand, a dict of `Behavior` fields, or a `Behavior`):
  "ok"                normal answer
  "500", "503", "400" that HTTP status with an OpenAI error body
  "429", "429:2", "429:<HTTP date>"   429, optionally with that Retry-After value
  "hang", "hang:5"    sleep (default 30 s) before answering: trips client timeouts
  "reset"             close the connection without any response
  "broken", "broken:2"  stream 2 chunks (default), then a malformed `data:` line, then drop the connection
  "cut:2"             stream 2 chunks, then drop the connection (no [DONE])
  "stall:2:5"         stream 2 chunks, then go silent 5 s, then continue
  "park"              hold the request (no bytes sent) until `release_parked()`, then answer normally;
                      a client that goes away meanwhile is counted in `disconnects` (`parked`: held now)
For non-stream requests, broken/cut send half of the JSON body and drop the connection.
GET /v1/models (the router's health probe) ignores the behaviours: it waits `models_delay_s` and answers
`models_status` (200 by default; both settable, also through /_fake/control).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

DEFAULT_ANSWER = "The quick brown fox jumps over the lazy dog and then rests in the warm afternoon sun."
_KINDS = ("ok", "status", "hang", "reset", "broken", "cut", "stall", "park")


@dataclass(frozen=True)
class Behavior:
    kind: str = "ok"
    status: int = 500
    retry_after: str | None = None
    seconds: float = 30.0
    after_chunks: int = 2

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | Behavior) -> Behavior:
        if isinstance(spec, Behavior):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        head, _, rest = spec.partition(":")
        if head.isdigit():
            return cls("status", status=int(head), retry_after=rest or None)
        if head not in _KINDS:
            raise ValueError(f"unknown fake behaviour {spec!r}")
        args = [a for a in rest.split(":") if a]
        if head == "hang":
            return cls("hang", seconds=float(args[0]) if args else 30.0)
        if head in ("broken", "cut"):
            return cls(head, after_chunks=int(args[0]) if args else 2)
        if head == "stall":
            return cls("stall", after_chunks=int(args[0]) if args else 2,
                       seconds=float(args[1]) if len(args) > 1 else 30.0)
        return cls(head)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    t: float = field(default_factory=time.time)


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):  # a chat message or a content part
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


class _Counts:
    """What both server handles derive from their `requests` list."""

    requests: list[RecordedRequest]

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def completions(self) -> list[RecordedRequest]:
        """The completion requests only (not GET /v1/models, the router's health probes)."""
        return [r for r in self.requests if r.method == "POST"]

    @property
    def completion_count(self) -> int:
        return len(self.completions)


class FakeOpenAI(_Counts):
    def __init__(
        self,
        *,
        api_key: str | None = "sk-fake-key",
        answer: str | Callable[[str, dict[str, Any]], str] = DEFAULT_ANSWER,
        models: tuple[str, ...] = ("fake-model",),
        reject_unknown_models: bool = False,
        ttft_s: float = 0.0,
        token_delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        # `answer` may be a function of (model, body): several "models" that answer differently (the
        # tuning lab's collect tests); `reject_unknown_models` makes a model not in `models` a 404.
        self.api_key, self.answer, self.models = api_key, answer, models
        self.reject_unknown_models = reject_unknown_models
        self.ttft_s, self.token_delay_s = ttft_s, token_delay_s
        self.host, self.port = host, port
        self._mode = Behavior()
        self._script: deque[Behavior] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.models_delay_s, self.models_status = 0.0, 200
        self.parked = 0  # requests held by "park" right now
        self.disconnects = 0  # parked requests whose client went away
        self._release = 0  # bumped by release_parked(): parked requests of an older generation go on

    # -- control (any thread) ---------------------------------------------------------------------
    @property
    def mode(self) -> Behavior:
        return self._mode

    @mode.setter
    def mode(self, spec: str | dict[str, Any] | Behavior) -> None:
        self._mode = Behavior.parse(spec)

    def set_mode(self, spec: str | dict[str, Any] | Behavior) -> None:
        self.mode = spec

    def script(self, *specs: str | dict[str, Any] | Behavior) -> None:
        """Queue behaviours for the next completion requests, one each, before `mode` applies again."""
        with self._lock:
            self._script.extend(Behavior.parse(s) for s in specs)

    def set_latency(self, ttft_s: float | None = None, token_delay_s: float | None = None) -> None:
        if ttft_s is not None:
            self.ttft_s = ttft_s
        if token_delay_s is not None:
            self.token_delay_s = token_delay_s

    def release_parked(self) -> None:
        """Let every request parked now go on (they then answer as "ok" does)."""
        with self._lock:
            self._release += 1

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def reset(self) -> None:
        """Between tests: no recorded requests or script, mode ok, /v1/models prompt and 200."""
        self.clear()
        self.mode = "ok"
        self.models_delay_s, self.models_status = 0.0, 200

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            leftover = asyncio.all_tasks(loop)  # handlers still hanging (mode "hang", "stall")
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._completion)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_post("/_fake/control", self._control)
        app.router.add_get("/_fake/requests", self._recorded)
        return app

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_api_key")

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        denied = self._unauthorized(request)
        if denied:
            return denied
        if self.models_delay_s:
            await asyncio.sleep(self.models_delay_s)
        if self.models_status != 200:
            return _error(self.models_status, f"Fake models error {self.models_status}.", "fake")
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self._record(request, body)
        denied = self._unauthorized(request)
        if denied:
            return denied
        if not isinstance(body, dict):
            return _error(400, "Body must be a JSON object.", "invalid_request")
        with self._lock:
            behavior = self._script.popleft() if self._script else self._mode
            self._counter += 1
            rid = self._counter
        if behavior.kind == "status":
            headers = {"Retry-After": behavior.retry_after} if behavior.retry_after else None
            return _error(behavior.status, f"Fake upstream error {behavior.status}.", "fake", headers)
        if behavior.kind == "reset":
            return _drop(request)
        if behavior.kind == "hang":
            await asyncio.sleep(behavior.seconds)
        if behavior.kind == "park" and not await self._park(request):
            return _drop(request)  # nobody is listening any more
        model = body.get("model", "")
        if self.reject_unknown_models and model not in self.models:
            return _error(404, f"The model `{model}` does not exist.", "model_not_found")
        chat = request.path.endswith("/chat/completions")
        prompt_tokens = _words(body.get("messages") if chat else body.get("prompt"))
        words = (self.answer(model, body) if callable(self.answer) else self.answer).split()
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or len(words)
        out, finish = words[:limit], "stop" if limit >= len(words) else "length"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(out),
                 "total_tokens": prompt_tokens + len(out)}
        base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-fake-{rid}", "created": int(time.time()),
                "model": body.get("model", "")}
        await asyncio.sleep(self.ttft_s)
        if body.get("stream"):
            return await self._stream(request, behavior, chat, base, out, finish, usage, body)
        await asyncio.sleep(self.token_delay_s * max(0, len(out) - 1))
        text = " ".join(out)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": finish, "logprobs": None}
            payload = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            payload = {**base, "object": "text_completion", "choices": [choice], "usage": usage}
        if behavior.kind in ("broken", "cut"):
            raw = json.dumps(payload).encode()
            resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Content-Length": str(len(raw))})
            await resp.prepare(request)
            await resp.write(raw[: len(raw) // 2])
            return _drop(request, resp)
        if behavior.kind == "stall":
            await asyncio.sleep(behavior.seconds)
        return web.json_response(payload)

    async def _stream(self, request: web.Request, behavior: Behavior, chat: bool, base: dict[str, Any],
                      out: list[str], finish: str, usage: dict[str, Any],
                      body: dict[str, Any]) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, reason: str | None = None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if piece is not None:
                    delta["content"] = piece
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason,
                                          "logprobs": None}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": reason, "logprobs": None}
            c = {**base, "object": obj, "choices": [choice]}
            return {**c, "usage": None} if include_usage else c

        events = [chunk(None, role=True)] if chat else []
        events += [chunk(w if i == 0 else " " + w) for i, w in enumerate(out)]
        events.append(chunk(None if chat else "", reason=finish))
        if include_usage:
            events.append({**base, "object": obj, "choices": [], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if i == behavior.after_chunks and behavior.kind in ("broken", "cut", "stall"):
                if behavior.kind == "broken":
                    await resp.write(b'data: {"id": "broken", "choices": [{"delta": {"cont\n\n')
                if behavior.kind != "stall":
                    return _drop(request, resp)
                await asyncio.sleep(behavior.seconds)
            if i > 0 and (not chat or i > 1) and event["choices"]:
                await asyncio.sleep(self.token_delay_s)
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _park(self, request: web.Request) -> bool:
        """Hold until released (True) or the client is gone (False, counted in `disconnects`)."""
        with self._lock:
            generation = self._release
            self.parked += 1
        gone = False
        try:
            while self._release == generation:
                if request.transport is None or request.transport.is_closing():
                    gone = True
                    break
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:  # aiohttp with handler cancellation on disconnect
            gone = True
            raise
        finally:
            with self._lock:
                self.parked -= 1
                self.disconnects += gone
        return not gone

    async def _control(self, request: web.Request) -> web.Response:
        cmd = await request.json()
        if cmd.get("clear"):
            self.clear()
        if "mode" in cmd:
            self.mode = cmd["mode"]
        if cmd.get("script"):
            self.script(*cmd["script"])
        self.set_latency(cmd.get("ttft_s"), cmd.get("token_delay_s"))
        if "models_delay_s" in cmd:
            self.models_delay_s = float(cmd["models_delay_s"])
        if "models_status" in cmd:
            self.models_status = int(cmd["models_status"])
        if cmd.get("release_parked"):
            self.release_parked()
        return web.json_response({"ok": True})

    async def _recorded(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.requests])

    def _record(self, request: web.Request, body: Any) -> None:
        rec = RecordedRequest(request.method, request.path, dict(request.headers), body)
        with self._lock:
            self._requests.append(rec)


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(status, "invalid_request_error")
    if status >= 500:
        kind = "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _drop(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Abort the TCP connection: the client sees a reset / incomplete body, never a clean end."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a dead connection quietly


class RemoteFakeOpenAI(_Counts):
    """Handle on a fake server in another process; same control API as FakeOpenAI."""

    def __init__(self, url: str, process: subprocess.Popen[str] | None = None):
        self.url, self.base_url, self.process = url, url + "/v1", process
        self.port = int(url.rsplit(":", 1)[1])

    def _control(self, **cmd: Any) -> None:
        httpx.post(self.url + "/_fake/control", json=cmd, timeout=10).raise_for_status()

    def script(self, *specs: str | dict[str, Any]) -> None:
        self._control(script=list(specs))

    def set_mode(self, spec: str | dict[str, Any]) -> None:
        self._control(mode=spec)

    def set_latency(self, ttft_s: float | None = None, token_delay_s: float | None = None) -> None:
        self._control(ttft_s=ttft_s, token_delay_s=token_delay_s)

    def clear(self) -> None:
        self._control(clear=True)

    @property
    def requests(self) -> list[RecordedRequest]:
        rows = httpx.get(self.url + "/_fake/requests", timeout=10).json()
        return [RecordedRequest(**row) for row in rows]



@contextlib.contextmanager
def fake_openai_subprocess(
    *,
    port: int = 0,
    api_key: str | None = "sk-fake-key",
    answer: str = DEFAULT_ANSWER,
    ttft_s: float = 0.0,
    token_delay_s: float = 0.0,
    start_timeout_s: float = 30.0,
) -> Iterator[RemoteFakeOpenAI]:
    """Run `python -m tests.support.fake_openai` in a child process; yields a RemoteFakeOpenAI."""
    cmd = [sys.executable, "-m", "tests.support.fake_openai", "--port", str(port), "--answer", answer,
           "--ttft", str(ttft_s), "--token-delay", str(token_delay_s)]
    cmd += ["--api-key", api_key] if api_key is not None else ["--any-key"]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, start_timeout_s)
        if not line.startswith("READY "):
            raise RuntimeError(f"fake OpenAI subprocess did not start (got {line!r})")
        yield RemoteFakeOpenAI(line.split()[1].removesuffix("/v1"), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline() if proc.stdout else ""),
                              daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].strip() if result else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible provider for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral (printed on READY line)")
    parser.add_argument("--api-key", default="sk-fake-key", help="bearer key clients must send")
    parser.add_argument("--any-key", action="store_true", help="accept any (or no) key")
    parser.add_argument("--answer", default=DEFAULT_ANSWER)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--mode", default="ok", help="default behaviour, e.g. ok, 500, 429:2, hang:5")
    args = parser.parse_args(argv)
    server = FakeOpenAI(api_key=None if args.any_key else args.api_key, answer=args.answer,
                        ttft_s=args.ttft, token_delay_s=args.token_delay, host=args.host, port=args.port)
    server.mode = args.mode
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        print(f"READY {server.base_url}", flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
