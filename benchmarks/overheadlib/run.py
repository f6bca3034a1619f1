"""Command line and measurement loop of `benchmarks/overhead.py` (see its docstring for the paths)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.overheadlib.common import ORDER, PATHS, Setup
from benchmarks.overheadlib.load import CpuMeter, answer_check, load
from benchmarks.overheadlib.procs import ROOT, profile_router, ray_start, replica_pid, stop
from benchmarks.overheadlib.report import compare_markdown, compare_summary, markdown, summarize
from router import serve_env

RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "Say hello to the benchmark."
# engine -> (concurrency, seconds, warm-up s, results file) for a full run and for --quick
DEFAULTS = {
    "fake": {"full": ("1,8,32,64", 6.0, 1.0, "overhead.json"), "quick": ("1,8", 1.0, 0.3, "overhead_quick.json")},
    "vllm": {"full": ("1,4,8", 20.0, 3.0, "overhead_vllm.json"),
             "quick": ("1,4", 3.0, 1.0, "overhead_vllm_quick.json")},
}


def parse(argv: list[str] | None, description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--engine", choices=("fake", "vllm"), default="fake",
                    help="fake: fixed-latency fakes (default); vllm: one real vLLM CPU engine (SmolLM2-135M)")
    ap.add_argument("--quick", action="store_true", help="short cells (fake: c=1,8, 1 s; vllm: c=1,4, 3 s)")
    ap.add_argument("--concurrency", default=None, help="comma list (default fake 1,8,32,64; vllm 1,4,8)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per cell (fake 6, vllm 20)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell (fake 1, vllm 3)")
    ap.add_argument("--port", type=int, default=8150, help="Serve HTTP port (8100-8199)")
    ap.add_argument("--ttft", type=float, default=0.005, help="fake TTFT, s")
    ap.add_argument("--token-delay", type=float, default=0.001, help="fake delay per further token, s")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per answer (fake: 15 ms + 5 ms ≈ 20 ms)")
    ap.add_argument("--paths", default=None, help="comma list of paths to run (default all available)")
    ap.add_argument("--litellm-bin", default=os.environ.get("LITELLM_BIN", "/work/litellm-venv/bin/litellm"),
                    help="the litellm CLI of a venv of its own (never .venv; env LITELLM_BIN)")
    ap.add_argument("--serve-env", default=None, choices=sorted(serve_env.PRESETS),
                    help="Serve fast-path preset (router/serve_env.py PRESETS); default: the project's "
                         "defaults (serve_env.DEFAULTS, what `make run` uses), an inherited variable winning")
    ap.add_argument("--compare-serve-envs", default=None,
                    help="comma list of presets: one fresh Ray per preset, presets interleaved per round "
                         "(--rounds); writes overhead_fastpaths.json (or --out)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of --compare-serve-envs")
    ap.add_argument("--profile", action="store_true", help="py-spy the router replica under auto")
    ap.add_argument("--profile-concurrency", type=int, default=8, help="concurrency of the --profile load")
    ap.add_argument("--out", default=None, help="results file name in benchmarks/results/")
    return ap.parse_args(argv)


def measure(setup: Setup, wanted: set[str], conc: list[int], seconds: float, warmup: float,
            idle_s: float) -> tuple[dict[str, dict[str, Any]], float]:
    """Every path x concurrency cell; returns results and the idle CPU rate subtracted from each cell."""
    cpu = CpuMeter(tuple(p.pid for p in setup.procs))
    # Idle CPU of the session (controller, raylet, GCS, health checks; the LiteLLM proxies and the fake
    # server when started) is subtracted per cell, and reported per stack.
    stack_of = cpu.stacks(setup.stacks)
    a, t_idle = cpu.snapshot(), time.perf_counter()
    time.sleep(idle_s)
    b = cpu.snapshot()
    idle_wall = time.perf_counter() - t_idle
    idle_rate = CpuMeter.delta(a, b) / idle_wall
    by_stack: dict[str, float] = {}
    for pid, v in b.items():
        name = stack_of.get(pid, "ray_serve")
        by_stack[name] = by_stack.get(name, 0.0) + (v - a.get(pid, 0.0)) / idle_wall
    setup.backend["idle_cpu_cores_by_stack"] = {k: round(v, 3) for k, v in sorted(by_stack.items())}
    order = [p for p in ORDER if p in setup.urls and p in wanted]
    results: dict[str, dict[str, Any]] = {p: {} for p in order}
    for c in conc:
        for label in order:
            url, b, h = setup.urls[label]
            a, t_cell = cpu.snapshot(), time.perf_counter()
            r = asyncio.run(load(url, b, c, seconds, warmup, h))
            wall = time.perf_counter() - t_cell
            used = CpuMeter.delta(a, cpu.snapshot()) - idle_rate * wall
            # CPU over warm-up + measurement, spread over the requests of both (rps x wall)
            r["cpu_ms_per_req"] = round(1000 * max(0.0, used) / max(1.0, r["rps"] * wall), 3)
            results[label][str(c)] = r
            print(f"c={c:<3} {label:<16} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                  f"{r['rps']:7.1f} rps  cpu {r['cpu_ms_per_req']:.2f} ms/req  err {r['errors']}", flush=True)
    return results, idle_rate


def profile(setup: Setup, seconds: float, conc: int = 8) -> dict[str, Any]:
    pid = replica_pid("router", "router")
    if not pid:
        return {"error": "router replica pid not found"}
    box: dict[str, Any] = {}
    out = RESULTS / "overhead_router.pyspy.txt"
    th = threading.Thread(target=lambda: box.update(profile_router(pid, seconds + 2, out)))
    th.start()
    url, b, h = setup.urls["auto"]
    asyncio.run(load(url, b, conc, seconds + 3, 0.5, h))
    th.join()
    return {"concurrency": conc, **box}


def compare(args: argparse.Namespace, argv: list[str]) -> int:
    """One fresh Ray + Serve per preset, presets interleaved per round (each child: its own process, so
    Serve's constants are read anew); the children's documents merged into one."""
    import subprocess

    presets = args.compare_serve_envs.split(",")
    child_argv: list[str] = []
    skip = False
    for a in argv:  # the child gets every option but the comparison's own
        if skip:
            skip = False
            continue
        if a in ("--compare-serve-envs", "--rounds", "--out"):
            skip = True
            continue
        if a.startswith(("--compare-serve-envs=", "--rounds=", "--out=")):
            continue
        child_argv.append(a)
    tmp = Path(tempfile.mkdtemp(prefix="overhead-cmp-"))
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in presets}
    loads: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for preset in presets:
            out = tmp / f"{preset}_{rnd}.json"
            load_before = [round(x, 2) for x in os.getloadavg()]
            cmd = [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), *child_argv, "--serve-env", preset,
                   "--out", str(out)]
            print(f"== round {rnd + 1}/{args.rounds} preset {preset}: {' '.join(cmd[1:])}", flush=True)
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            loads.append({"round": rnd + 1, "preset": preset, "load_before": load_before,
                          "load_after": [round(x, 2) for x in os.getloadavg()], "rc": rc})
            runs[preset].append(json.loads(out.read_text()) if out.exists() else {"error": f"exit {rc}"})
    shutil.rmtree(tmp, ignore_errors=True)
    doc = compare_summary(runs, presets)
    doc.update({
        "presets": {p: serve_env.PRESETS[p] for p in presets},
        "loads": loads,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/overhead.py", *argv]),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    })
    out_name = args.out or "overhead_fastpaths.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / out_name).write_text(json.dumps(doc, indent=2) + "\n")
    print(compare_markdown(doc))
    print(f"wrote {RESULTS / out_name}")
    return 0


def litellm_info(bin_path: str) -> dict[str, Any]:
    """What the LiteLLM paths ran: version, venv, settings (procs.LITELLM_CONFIG / LITELLM_ENV)."""
    import subprocess

    from benchmarks.overheadlib.common import LITELLM_WORKERS
    from benchmarks.overheadlib.procs import LITELLM_CONFIG, LITELLM_ENV

    py = Path(bin_path).parent / "python"
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True)
    return {"version": r.stdout.strip() or None, "bin": bin_path, "workers": LITELLM_WORKERS,
            "config": LITELLM_CONFIG, "env": LITELLM_ENV, "master_key": None,
            "niceness": "same as the benchmark (inherited)"}


def main(argv: list[str] | None = None, description: str = "") -> int:
    args = parse(argv, description)
    if args.compare_serve_envs:
        return compare(args, list(argv if argv is not None else sys.argv[1:]))
    # Before Ray starts: Serve reads these once per process (router/serve_env.py)
    serve_settings = serve_env.apply(preset=args.serve_env)
    c_def, s_def, w_def, out_def = DEFAULTS[args.engine]["quick" if args.quick else "full"]
    conc = [int(c) for c in (args.concurrency or c_def).split(",")]
    seconds = args.seconds if args.seconds is not None else s_def
    warmup = args.warmup if args.warmup is not None else w_def
    out_name = args.out or out_def
    wanted = set((args.paths or ",".join((*PATHS, "provider_direct", "litellm_w2"))).split(","))
    if args.quick and args.paths is None:
        wanted -= {"litellm", "litellm_w2", "provider_direct"}

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    import ray
    from ray import serve

    from benchmarks.overheadlib import fake, vllm

    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}],
                            "max_tokens": args.tokens}
    if args.engine == "vllm":  # deterministic answers of exactly max_tokens tokens
        body.update(temperature=0, ignore_eos=True)
    extra: dict[str, Any] = {}
    setup = Setup()
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    t_all = time.time()
    ray_start(num_cpus=8)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deploy = vllm.deploy if args.engine == "vllm" else fake.deploy
        setup = deploy(args, wanted, tmp, body, f"http://127.0.0.1:{args.port}")
        if args.quick and "litellm" not in wanted:
            setup.skipped.setdefault("litellm", "not run in --quick mode")
        ready_s = time.time() - t_all
        extra["answers"] = {p: answer_check(ep) for p, ep in setup.urls.items() if p in wanted}
        results, idle_rate = measure(setup, wanted, conc, seconds, warmup, 1.0 if args.quick else 3.0)
        extra["idle_cpu_cores"] = round(idle_rate, 3)
        extra["idle_cpu_cores_by_stack"] = setup.backend.pop("idle_cpu_cores_by_stack", None)
        if args.profile:
            key = f"profile_router_auto_c{args.profile_concurrency}"
            extra[key] = profile(setup, seconds, args.profile_concurrency)
            if key != "profile_router_auto_c8":  # the key earlier runs wrote stays, saying where to look
                extra["profile_router_auto_c8"] = {"not_run": f"profiled at c={args.profile_concurrency}: {key}"}
    finally:
        stop(setup.procs)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)

    for p in PATHS:
        if p not in results and p not in setup.skipped:
            setup.skipped[p] = "not requested (--paths)"
    doc = summarize(results, setup.skipped, conc, setup.litellm_base)
    doc.update(extra)
    doc.update({
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "env": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED"),
                **serve_settings},
        "serve_env_preset": args.serve_env or f"defaults ({serve_env.DEFAULT_PRESET})",
        "litellm": litellm_info(args.litellm_bin) if any(p.startswith("litellm") for p in results) else None,
        "niceness": os.nice(0),
        "engine": args.engine,
        # key kept from the fake-only version; the vLLM engine's settings in vllm mode
        "fake_engine" if args.engine == "fake" else "vllm_engine": setup.backend,
        "layout": setup.layout,
        "request": body,
        "seconds_per_cell": seconds, "warmup_s": warmup, "setup_s": round(ready_s, 1),
        "client": "aiohttp closed loop, one process (the benchmark driver), keep-alive connections",
    })
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / out_name).write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"wrote {RESULTS / out_name}")
    return 0
