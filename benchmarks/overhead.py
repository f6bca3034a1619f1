"""Routing overhead (P1): the same requests through our router and through what a user would use instead.

    .venv/bin/python benchmarks/overhead.py                 # full run (c = 1, 8, 32, 64)
    .venv/bin/python benchmarks/overhead.py --quick         # c = 1, 8, 1 s cells; writes overhead_quick.json
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 .venv/bin/python benchmarks/overhead.py --out overhead_throughput_optimized.json
    .venv/bin/python benchmarks/overhead.py --profile       # + py-spy on the router replica under auto c=8
    .venv/bin/python benchmarks/overhead.py --engine vllm   # one real vLLM CPU engine; c = 1, 4, 8, 20 s cells;
                                                            # writes overhead_vllm.json

Paths (labels of the JSON contract), all behind the same Serve HTTP proxy, against the same backend.
With `--engine fake` (default; benchmarks/overheadlib/fake.py) the backend is a fake engine
(`benchmarks/fake_engine.py`: fixed TTFT + per-token delay, ~20 ms per non-streaming answer):
  auto         our RouterIngress, `model: "auto"` (policy cheapest-fit over two fake targets)
  pinned       our RouterIngress, `model: "fake-a"`
  own_route    an identical FakeLLM "fake-a" as its own app's HTTP route (one hop: proxy -> model replica)
  passthrough  a no-logic Serve ingress forwarding the body by handle to the router app's model-fake-a
               replica, the one `auto`/`pinned` use (two hops: the floor)
  serve_llm    Ray Serve LLM's build_openai_app (OpenAiIngress -> LLMServer) with a fake LLMEngine of the
               same latency (benchmarks/fake_serve_llm.py); its own deployment, not fake-a
  litellm      LiteLLM's proxy (separate venv, see --litellm-bin) in front of the fake OpenAI server
               (tests/support/fake_openai.py, same delays); `provider_direct` = that server directly,
               the baseline LiteLLM's added latency is measured over.
With `--engine vllm` (benchmarks/overheadlib/vllm.py) every path ends at ONE SmolLM2-135M vLLM CPU engine
replica, `model-smollm2-135m` in the router app; that module's docstring says exactly what own_route,
serve_llm and litellm are there. Requests: fixed prompt, max_tokens 16, temperature 0, ignore_eos.

Closed loop: N workers each send a request, wait for the full answer, send the next, for `--seconds`
per cell after a short warm-up. Cells run path after path within one concurrency level, so machine
noise (the 2 cores are shared) hits neighbouring paths alike.

Writes benchmarks/results/<out>.json: results[path][str(c)] = {p50_ms, p99_ms, mean_ms, rps, n,
errors, cpu_ms_per_req}, plus the summary keys of issue 7 (null where a path was skipped), `skipped`
(path -> why), `layout` (path -> what it measures) and `answers` (output tokens of one answer per path).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.overheadlib.run import main  # noqa: E402 - needs the repo root on sys.path first

if __name__ == "__main__":
    raise SystemExit(main(description=(__doc__ or "").split("\n")[0]))
