"""Helpers of benchmarks/gpu_check.sh (a one-GPU run of the packaged models on CUDA vLLM).

    python benchmarks/gpu_check.py config --out cluster-gpu.yaml [--gpu-fraction 0.4] [--port 8000]
    python benchmarks/gpu_check.py check-config cluster-gpu.yaml   # the deployments' GPU placement, no Ray
    python benchmarks/gpu_check.py bench --base-url http://127.0.0.1:8000/v1 --models smollm2-135m,gemma3-270m
    python benchmarks/gpu_check.py self-test                       # bench against a fake OpenAI server

`config` turns cluster.yaml into the same layout on one GPU: every model `accelerator: gpu` with a share
of the GPU (`gpu_fraction`, and vLLM's `gpu_memory_utilization` to match) so both engines fit on one
device; nothing else changes (same router args, same builders, same code path as on CPU). `bench` sends
streamed requests pinned to each model and prints time to first token and tokens/s (one at a time, and
`--concurrency` at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_APP = "router.app:build_model"
ROUTER_APP = "router.app:build"


def _gpu_engine(entry: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The engine part of one model on a share of one GPU (routing fields pass through untouched)."""
    out = {k: v for k, v in entry.items() if k not in ("cpu", "accelerator_type")}
    out.update(accelerator="gpu", gpu_fraction=fraction, kv_cache_memory_bytes=None)
    kwargs = dict(entry.get("engine_kwargs") or {})
    # float32 as on CPU: the same numerics as the CPU end-to-end tests expect (these models are tiny);
    # eager mode skips CUDA-graph capture, which would add start-up time for no gain here.
    kwargs.update(gpu_memory_utilization=round(fraction * 0.9, 3), max_num_seqs=32, enforce_eager=True)
    out["engine_kwargs"] = kwargs
    return out


def gpu_config(src: Path, fraction: float, port: int | None = None) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(src.read_text())
    for app in cfg["applications"]:
        if app.get("import_path") == MODEL_APP:
            app["args"] = _gpu_engine(app["args"], fraction)
        elif app.get("import_path") == ROUTER_APP:
            app["args"]["models"] = [_gpu_engine(m, fraction) for m in app["args"]["models"]]
    if port is not None:
        cfg.setdefault("http_options", {})["port"] = port
    return cfg


def check_config(path: Path) -> list[str]:
    """Build each model application's ray.serve.llm LLMConfig (no Ray started) and check it asks for a
    GPU share and none of the CPU engine's settings. Returns what was checked, raises on a problem."""
    from deployments.vllm import llm_config
    from deployments.vllm_plugin import FLAG
    from router.app import parse_engine
    from router.validate import check_serve_config, load_serve_config

    data = load_serve_config(path)
    check_serve_config(data)  # the same validation as `routerctl check`
    done = []
    for app in data["applications"]:
        if app.get("import_path") != MODEL_APP:
            continue
        m = parse_engine(app["args"], f"{app['name']}.args")
        c = llm_config(m, f"/prepared/{m.id}", None)
        bundles = (c.placement_group_config or {}).get("bundles") or []
        env = (c.runtime_env or {}).get("env_vars") or {}
        assert m.accelerator == "gpu" and bundles and 0 < bundles[0]["GPU"] < 1, (m.id, bundles)
        assert FLAG not in env and "VLLM_CPU_OMP_THREADS_BIND" not in env, (m.id, env)
        assert "kv_cache_memory_bytes" not in c.engine_kwargs, m.id
        done.append(f"{m.id}: GPU share {bundles[0]['GPU']}, gpu_memory_utilization "
                    f"{c.engine_kwargs['gpu_memory_utilization']}")
    assert done, "no model application in the config"
    return done


async def _one(client: Any, model: str, max_tokens: int) -> dict[str, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a short story about a robot."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    async with client.stream("POST", "/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{model}: {chunk['error']}")
            if ttft is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    e2e = time.perf_counter() - t0
    ttft = e2e if ttft is None else ttft
    return {"ttft_s": ttft, "e2e_s": e2e, "tokens": tokens,
            "decode_tok_s": (tokens - 1) / (e2e - ttft) if tokens > 1 and e2e > ttft else 0.0}


async def bench(base_url: str, models: list[str], requests: int, concurrency: int, max_tokens: int) -> dict:
    import httpx

    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_connections=concurrency + 4)) as c:
        for model in models:
            await _one(c, model, 8)  # warm-up (first request compiles / allocates)
            single = [await _one(c, model, max_tokens) for _ in range(requests)]
            t0 = time.perf_counter()
            batch = await asyncio.gather(*(_one(c, model, max_tokens) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
            out[model] = {
                "ttft_ms_p50": round(1000 * statistics.median(r["ttft_s"] for r in single), 1),
                "decode_tok_s_p50": round(statistics.median(r["decode_tok_s"] for r in single), 1),
                f"ttft_ms_p50_at_{concurrency}": round(1000 * statistics.median(r["ttft_s"] for r in batch), 1),
                f"throughput_tok_s_at_{concurrency}": round(sum(r["tokens"] for r in batch) / wall, 1),
                "tokens_per_request": max_tokens,
            }
    return out


def print_table(results: dict[str, Any]) -> None:
    cols = sorted({k for r in results.values() for k in r})
    print("model".ljust(16) + "".join(c.rjust(26) for c in cols))
    for model, r in results.items():
        print(model.ljust(16) + "".join(str(r.get(c, "")).rjust(26) for c in cols))


def self_test() -> dict[str, Any]:
    """The bench's own code path against the fake OpenAI server of the test suite (for --check)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key=None, ttft_s=0.02, token_delay_s=0.002) as server:
        results = asyncio.run(bench(server.base_url, ["fake-a"], requests=2, concurrency=3, max_tokens=16))
    r = results["fake-a"]
    assert 10 <= r["ttft_ms_p50"] < 1000 and r["decode_tok_s_p50"] > 0 and r["throughput_tok_s_at_3"] > 0, r
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="write cluster.yaml's layout for one GPU")
    c.add_argument("--src", default=str(ROOT / "cluster.yaml"))
    c.add_argument("--out", required=True)
    c.add_argument("--gpu-fraction", type=float, default=0.4, help="share of the GPU per engine")
    c.add_argument("--port", type=int, default=None)
    k = sub.add_parser("check-config", help="validate a GPU config and its deployments' placement (no Ray)")
    k.add_argument("file")
    b = sub.add_parser("bench", help="TTFT and tokens/s per model of a running endpoint")
    b.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    b.add_argument("--models", required=True, help="comma-separated target ids")
    b.add_argument("--requests", type=int, default=5)
    b.add_argument("--concurrency", type=int, default=8)
    b.add_argument("--max-tokens", type=int, default=128)
    b.add_argument("--json", action="store_true")
    sub.add_parser("self-test", help="the bench against a fake OpenAI server")
    args = ap.parse_args(argv)

    if args.cmd == "config":
        import yaml

        cfg = gpu_config(Path(args.src), args.gpu_fraction, args.port)
        Path(args.out).write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"wrote {args.out}")
    elif args.cmd == "check-config":
        for line in check_config(Path(args.file)):
            print(f"  {line}")
    elif args.cmd == "bench":
        results = asyncio.run(bench(args.base_url, args.models.split(","), args.requests, args.concurrency,
                                    args.max_tokens))
        print(json.dumps(results, indent=2)) if args.json else print_table(results)
    else:
        print_table(self_test())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
