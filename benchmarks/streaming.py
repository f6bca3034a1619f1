"""Streaming through the router (issue 17, part 4): tokens/s and inter-chunk gaps, `auto` vs the engine's
own route, with stream batching across the Serve handle off and on (deployments/handle_client.py).

    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/streaming.py                 # fake engine, fast tokens
    flock /tmp/rr-ray.lock .venv/bin/python benchmarks/streaming.py --engine vllm   # SmolLM2-135M vLLM CPU

Paths (the same deployments as benchmarks/overhead.py builds, benchmarks/overheadlib/{fake,vllm}.py):
  fake   own_route    an identical FakeLLM as its own app's HTTP route: proxy -> engine replica (one hop;
                      Serve batches a replica's HTTP messages itself, so batching does not apply to it)
         passthrough  thin ingress -> the router's model-fake-a replica by handle (HandleClient) -> SSE
         auto         RouterIngress, model auto -> model-fake-a (the same replica as passthrough)
  vllm   own_route    thin ingress -> the router's model-smollm2-135m replica by handle (the engine has no
                      HTTP route of its own; see benchmarks/overheadlib/vllm.py): proxy -> ingress -> engine
         auto         RouterIngress, model auto -> the same replica
Batching modes (`--modes`) are switched at run time on the model replicas (FakeEngineReplica.configure /
RouterLLMServer.set_stream_batching), so every mode runs on the same replicas in the same run: `off`
(one Ray object per chunk, the old protocol) or an interval in ms (0: only chunks ready together).
Rounds repeat every mode x concurrency x path cell, interleaved, to show the spread.

Client: aiohttp closed loop in this process; N workers each stream a request to its end, then the next.
Per cell: output tokens/s over the cell (usage.completion_tokens of the streams that ended in it), each
stream's own decode rate, TTFT (first chunk with text), and the gaps between consecutive chunks with text
as the client reads them (p50/p99); CPU ms per 1k tokens of the whole Ray session (idle subtracted); for
the fake, the Ray objects the model replicas sent per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.overheadlib.load import CpuMeter, pct  # noqa: E402
from benchmarks.overheadlib.procs import ray_start, stop  # noqa: E402
from deployments.handle_client import carries_output  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "Count from one to one hundred."


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("fake", "vllm"), default="fake")
    ap.add_argument("--modes", default="off,0,2,5,10", help="comma list: off or an interval in ms")
    ap.add_argument("--concurrency", default=None, help="comma list (fake 1,16; vllm 1,8)")
    ap.add_argument("--seconds", type=float, default=None, help="measured s per cell (fake 4, vllm 15)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s per cell (fake 1, vllm 3)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens (the fake answers exactly that many)")
    ap.add_argument("--ttft", type=float, default=0.005, help="fake TTFT, s")
    ap.add_argument("--token-delay", type=float, default=0.0005, help="fake delay per further token, s")
    ap.add_argument("--paths", default=None, help="comma list (fake own_route,passthrough,auto; vllm own_route,auto)")
    ap.add_argument("--port", type=int, default=8160)
    ap.add_argument("--out", default="streaming.json", help="results file in benchmarks/results/ (merged by --key)")
    ap.add_argument("--key", default=None, help="this run's key in the results file (default: the engine)")
    # benchmarks.overheadlib's deploy functions read these
    ap.add_argument("--litellm-bin", default="")
    return ap.parse_args(argv)


async def stream_load(url: str, body: dict[str, Any], conc: int, seconds: float, warmup: float) -> dict[str, Any]:
    import aiohttp

    ttfts: list[float] = []
    gaps: list[float] = []
    rates: list[float] = []
    tokens = 0
    streams = errors = 0
    payload = json.dumps(body).encode()
    hdrs = {"content-type": "application/json"}
    measuring = False
    stop_at = 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            nonlocal tokens, streams, errors
            t0 = time.perf_counter()
            times: list[float] = []
            used = None
            ok = False
            try:
                async with session.post(url, data=payload, headers=hdrs) as r:
                    async for line in r.content:
                        if not line.startswith(b"data: "):
                            continue
                        data = line[6:].strip()
                        if data == b"[DONE]":
                            ok = r.status == 200
                            break
                        ev = json.loads(data)
                        if "error" in ev and not ev.get("choices"):
                            break
                        if carries_output(ev):
                            times.append(time.perf_counter())
                        if ev.get("usage"):
                            used = ev["usage"].get("completion_tokens")
            except Exception:
                ok = False
            if not measuring:
                return
            if not ok or not times:
                errors += 1
                return
            streams += 1
            tokens += used if used is not None else len(times)
            ttfts.append(1000 * (times[0] - t0))
            gaps.extend(1000 * (b - a) for a, b in zip(times, times[1:], strict=False))
            if len(times) > 1 and times[-1] > times[0]:
                rates.append(((used or len(times)) - 1) / (times[-1] - times[0]))

        async def worker() -> None:
            while not (stop_at and time.perf_counter() >= stop_at):
                await one()

        tasks = [asyncio.create_task(worker()) for _ in range(conc)]
        await asyncio.sleep(warmup)
        measuring = True
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t_start
    r2 = lambda x: round(x, 2)  # noqa: E731
    return {
        "tok_s": r2(tokens / elapsed), "streams": streams, "errors": errors, "tokens": tokens,
        "stream_tok_s_p50": r2(pct(rates, 0.5)), "ttft_p50_ms": r2(pct(ttfts, 0.5)),
        "ttft_p99_ms": r2(pct(ttfts, 0.99)),
        "gap_p50_ms": r2(pct(gaps, 0.5)), "gap_p99_ms": r2(pct(gaps, 0.99)), "elapsed_s": r2(elapsed),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    fake = args.engine == "fake"
    conc = [int(c) for c in (args.concurrency or ("1,16" if fake else "1,8")).split(",")]
    seconds = args.seconds if args.seconds is not None else (4.0 if fake else 15.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if fake else 3.0)
    paths = (args.paths or ("own_route,passthrough,auto" if fake else "own_route,auto")).split(",")
    modes: list[float | None] = [None if m == "off" else float(m) for m in args.modes.split(",")]
    up_before = uptime()
    print(up_before, flush=True)

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    import ray
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    from benchmarks.overheadlib import fake as fake_setup
    from benchmarks.overheadlib import vllm as vllm_setup
    from benchmarks.overheadlib.common import Setup

    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}],
                            "max_tokens": args.tokens}
    if not fake:
        body.update(temperature=0, ignore_eos=True)
    tmp = Path(tempfile.mkdtemp(prefix="streaming-"))
    setup = Setup()
    results: list[dict[str, Any]] = []
    t_all = time.time()
    ray_start(num_cpus=8)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deploy = fake_setup.deploy if fake else vllm_setup.deploy
        setup = deploy(args, set(paths), tmp, body, f"http://127.0.0.1:{args.port}")
        setup_s = round(time.time() - t_all, 1)
        if fake:
            models = [DeploymentHandle(f"model-{m}", "router") for m in ("fake-a", "fake-b")]
        else:
            models = [DeploymentHandle(f"model-{vllm_setup.MODEL_ID}", "router")]

        def set_mode(ms: float | None) -> None:
            for h in models:
                if fake:
                    h.configure.remote(stream_batch_ms=ms).result()
                else:
                    h.set_stream_batching.remote(ms).result()

        def objects() -> tuple[int, int]:
            if not fake:
                return 0, 0
            st = [h.stats.remote().result() for h in models]
            return sum(s["stream_objects"] for s in st), sum(s["stream_chunks"] for s in st)

        cpu = CpuMeter(tuple(p.pid for p in setup.procs))
        a, t0 = cpu.snapshot(), time.perf_counter()
        time.sleep(3.0)
        idle = CpuMeter.delta(a, cpu.snapshot()) / (time.perf_counter() - t0)
        for rnd in range(args.rounds):
            for ms in modes:
                set_mode(ms)
                for c in conc:
                    for p in paths:
                        url, b, _ = setup.urls[p]
                        sb = {**b, "stream": True, "stream_options": {"include_usage": True}}
                        o0, k0 = objects()
                        a, t0 = cpu.snapshot(), time.perf_counter()
                        r = asyncio.run(stream_load(url, sb, c, seconds, warmup))
                        wall = time.perf_counter() - t0
                        used = max(0.0, CpuMeter.delta(a, cpu.snapshot()) - idle * wall)
                        o1, k1 = objects()
                        # CPU over warm-up + measurement, spread over the tokens of both (tok/s x wall)
                        r["cpu_ms_per_1k_tok"] = round(1e6 * used / max(1.0, r["tok_s"] * wall), 1)
                        if fake and k1 > k0:
                            r["chunks_per_object"] = round((k1 - k0) / max(1, o1 - o0), 2)
                        row = {"round": rnd, "batch_ms": "off" if ms is None else ms, "c": c, "path": p, **r}
                        results.append(row)
                        print(f"r{rnd} batch={row['batch_ms']!s:<4} c={c:<3} {p:<12} {r['tok_s']:8.1f} tok/s  "
                              f"stream {r['stream_tok_s_p50']:7.1f}  ttft p50 {r['ttft_p50_ms']:6.1f}  "
                              f"gap p50 {r['gap_p50_ms']:6.2f} p99 {r['gap_p99_ms']:6.2f} ms  "
                              f"cpu {r['cpu_ms_per_1k_tok']:7.1f} ms/1k  obj {r.get('chunks_per_object', '-')}  "
                              f"err {r['errors']}", flush=True)
        set_mode(None if not modes else modes[-1])
    finally:
        stop(setup.procs)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
    up_after = uptime()
    print(up_after, flush=True)
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/streaming.py", *(argv if argv is not None else sys.argv[1:])]),
        "uptime_before": up_before, "uptime_after": up_after,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "backend": setup.backend, "layout": {p: setup.layout.get(p) for p in paths},
        "request": {**body, "stream": True, "stream_options": {"include_usage": True}},
        "modes": ["off" if m is None else m for m in modes], "concurrency": conc, "seconds_per_cell": seconds,
        "warmup_s": warmup, "rounds": args.rounds, "idle_cpu_cores": round(idle, 3), "setup_s": setup_s,
        "client": "aiohttp closed loop in the benchmark driver; gaps between chunks with text as read",
        "rows": results, "summary": summarize(results),
    }
    out = RESULTS / args.out
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged[args.key or args.engine] = doc
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {out} [{args.key or args.engine}]")
    return 0


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (batch mode, c, path): median over rounds and the min..max spread of tok/s and gap p99."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(f"batch={r['batch_ms']} c={r['c']} {r['path']}", []).append(r)
    out: dict[str, Any] = {}
    for k, rs in cells.items():
        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return round(statistics.median(float(r[key]) for r in rs), 2)

        out[k] = {"tok_s": med("tok_s"), "tok_s_range": [min(r["tok_s"] for r in rs), max(r["tok_s"] for r in rs)],
                  "gap_p99_ms": med("gap_p99_ms"), "gap_p99_range": [min(r["gap_p99_ms"] for r in rs),
                                                                     max(r["gap_p99_ms"] for r in rs)],
                  "ttft_p50_ms": med("ttft_p50_ms"), "stream_tok_s_p50": med("stream_tok_s_p50"),
                  "cpu_ms_per_1k_tok": med("cpu_ms_per_1k_tok"),
                  **({"chunks_per_object": med("chunks_per_object")} if "chunks_per_object" in rs[0] else {})}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
