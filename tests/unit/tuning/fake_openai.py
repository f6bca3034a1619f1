"""A small OpenAI-compatible HTTP server on 127.0.0.1 for collect tests (stdlib, one thread).

Targets: `good` answers "What is A+B?" correctly, `bad` always answers 0; both stream SSE chunks with a
final usage chunk, like vLLM with stream_options.include_usage.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _json(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            ids = ["auto", "good", "bad"]
            self._json(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        model = body["model"]
        if model not in ("good", "bad"):
            self._json(404, {"error": {"message": f"unknown model {model}"}})
            return
        text = body["messages"][-1]["content"]
        m = re.search(r"What is (\d+)\+(\d+)", text)
        val = int(m.group(1)) + int(m.group(2)) if (m and model == "good") else 0
        pieces = ["Let me add. ", "The sum is ", f"{val}.\n", f"#### {val}"]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("x-router-target", model)
        self.end_headers()
        for p in pieces:
            chunk = {"object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": p}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(pieces),
                 "total_tokens": len(text.split()) + len(pieces)}
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class FakeOpenAI:
    """Context manager: `with FakeOpenAI() as srv: srv.base_url`."""

    def __enter__(self) -> FakeOpenAI:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self

    @property
    def requests(self) -> list[dict]:
        return self.httpd.requests  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
