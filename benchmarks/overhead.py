"""Routing overhead (P1): the same requests through our router and through what a user would use instead.

    .venv/bin/python benchmarks/overhead.py                 # full run (c = 1, 8, 32, 64)
    .venv/bin/python benchmarks/overhead.py --quick         # < 60 s, c = 1, 8; writes overhead_quick.json
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 .venv/bin/python benchmarks/overhead.py --out overhead_throughput_optimized.json
    .venv/bin/python benchmarks/overhead.py --profile       # + py-spy on the router replica under auto c=8

Paths (labels of the JSON contract), all behind the same Serve HTTP proxy, against the same fake engine
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
Closed loop: N workers each send a request, wait for the full answer, send the next, for `--seconds`
per cell after a short warm-up. Cells run path after path within one concurrency level, so machine
noise (the 2 cores are shared) hits neighbouring paths alike.

Writes benchmarks/results/overhead.json: results[path][str(c)] = {p50_ms, p99_ms, mean_ms, rps, n,
errors, cpu_ms_per_req}, plus the summary keys of issue 7 (null where a path was skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
PATHS = ("auto", "pinned", "own_route", "passthrough", "serve_llm", "litellm")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


class CpuMeter:
    """CPU seconds used by this Ray session's processes (children of this driver), excluding the driver."""

    def __init__(self, extra_pids: tuple[int, ...] = ()) -> None:
        import psutil

        self._psutil = psutil
        self.extra = extra_pids

    def _procs(self) -> list[Any]:
        me = self._psutil.Process(os.getpid())
        procs = [p for p in me.children(recursive=True)]
        for pid in self.extra:
            try:
                p = self._psutil.Process(pid)
                procs.append(p)
                procs.extend(p.children(recursive=True))
            except self._psutil.Error:
                pass
        return procs

    def snapshot(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for p in self._procs():
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except self._psutil.Error:
                pass
        return out

    @staticmethod
    def delta(a: dict[int, float], b: dict[int, float]) -> float:
        return sum(v - a.get(pid, 0.0) for pid, v in b.items())


async def load(url: str, body: dict[str, Any], conc: int, seconds: float, warmup: float,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    targets: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    payload = json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession(connector=conn) as session:
        stop_at = 0.0
        measuring = False

        async def worker() -> None:
            nonlocal errors
            while True:
                now = time.perf_counter()
                if stop_at and now >= stop_at:
                    return
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=payload, headers=hdrs) as r:
                        await r.read()
                        ok = r.status == 200
                        tgt = r.headers.get("x-router-target")
                except Exception:
                    ok, tgt = False, None
                dt_ms = (time.perf_counter() - t0) * 1000
                if measuring:
                    if ok:
                        lat.append(dt_ms)
                        if tgt:
                            targets[tgt] = targets.get(tgt, 0) + 1
                    else:
                        errors += 1

        tasks = [asyncio.create_task(worker()) for _ in range(conc)]
        await asyncio.sleep(warmup)
        measuring = True
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t_start
    return {
        "p50_ms": round(pct(lat, 0.50), 2), "p99_ms": round(pct(lat, 0.99), 2),
        "mean_ms": round(sum(lat) / len(lat), 2) if lat else None,
        "rps": round(len(lat) / elapsed, 1), "n": len(lat), "errors": errors,
        **({"targets": targets} if targets else {}),
    }


def model_dir(tmp: Path) -> str:
    d = tmp / "fake-model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["FakeForCausalLM"]}))
    return str(d)


def router_config(src: str) -> dict[str, Any]:
    from router.config import AppConfig

    def model(mid: str, price: float, quality: float) -> dict[str, Any]:
        return {
            "id": mid, "source": src, "context_window": 2048, "input_price_per_mtok": price,
            "output_price_per_mtok": 2 * price, "quality_prior": quality,
            "latency": {"ttft_ms": 10, "tpot_ms": 1, "max_concurrency": 64}, "max_ongoing_requests": 1024,
        }

    cfg = AppConfig.model_validate({
        "models": [model("fake-a", 0.01, 0.5), model("fake-b", 0.02, 0.6)],
        "policy": {"name": "cheapest-fit"}, "quality": {"kind": "prior"},
        "ingress": {"max_ongoing_requests": 1024},
    })
    return cfg.model_dump(mode="json")


def start_fake_openai(ttft: float, delay: float) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--api-key", "sk-bench",
         "--ttft", str(ttft), "--token-delay", str(delay)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if not line.startswith("READY"):
        p.kill()
        raise RuntimeError(f"fake_openai did not start: {line!r}")
    return p, line.split()[1]


def start_litellm(bin_path: str, base_url: str, port: int, tmp: Path) -> subprocess.Popen[str]:
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: fake-a\n"
        "    litellm_params:\n"
        "      model: openai/fake-a\n"
        f"      api_base: {base_url}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        "general_settings:\n  master_key: sk-bench-master\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    env.pop("PYTHONPATH", None)
    log = open(tmp / "litellm.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [bin_path, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )


def wait_http(url: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None,
              proc: subprocess.Popen[str] | None = None) -> None:
    import httpx

    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            r = httpx.post(url, json=body, headers=headers, timeout=10)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except Exception as e:
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready: {last}")


def profile_router(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy record (raw collapsed stacks) on the router replica; top self and inclusive frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    r = subprocess.run(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
         "--rate", "200", "--nonblocking", "-o", str(out)],
        capture_output=True, text=True,
    )
    if r.returncode != 0 or not out.exists():
        return {"error": (r.stderr or r.stdout)[-500:]}
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        k = int(n)
        total += k
        frames = stack.split(";")
        self_c[frames[-1]] = self_c.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k

    def top(d: dict[str, int], n: int, only: tuple[str, ...] = ()) -> list[list[Any]]:
        items = [(f, c) for f, c in d.items() if not only or any(o in f for o in only)]
        items.sort(key=lambda x: -x[1])
        return [[f, round(100 * c / total, 1)] for f, c in items[:n]]

    return {
        "samples": total,
        "top_self_pct": top(self_c, 15),
        "top_inclusive_ours_pct": top(incl, 20, ("/router/", "/policies/", "/deployments/")),
        "top_inclusive_pct": top(incl, 25),
    }


def replica_pid(app: str, deployment: str) -> int | None:
    import psutil

    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if f"ServeReplica:{app}:{deployment}" in cmd:
            return p.pid
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="c=1,8, 1 s per cell; writes overhead_quick.json")
    ap.add_argument("--concurrency", default=None, help="comma list (default 1,8,32,64)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per cell (default 6)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell (default 1)")
    ap.add_argument("--port", type=int, default=8150, help="Serve HTTP port (8100-8199)")
    ap.add_argument("--ttft", type=float, default=0.005, help="fake TTFT, s")
    ap.add_argument("--token-delay", type=float, default=0.001, help="fake delay per further token, s")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per answer (15 ms + 5 ms ≈ 20 ms)")
    ap.add_argument("--paths", default=None, help="comma list of paths to run (default all available)")
    ap.add_argument("--litellm-bin", default=str(Path.home() / ".cache/llm-router-bench/litellm-venv/bin/litellm"))
    ap.add_argument("--profile", action="store_true", help="py-spy the router replica under auto c=8")
    ap.add_argument("--out", default=None, help="results file name in benchmarks/results/")
    args = ap.parse_args(argv)

    conc = [int(c) for c in (args.concurrency or ("1,8" if args.quick else "1,8,32,64")).split(",")]
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 6.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    out_name = args.out or ("overhead_quick.json" if args.quick else "overhead.json")
    wanted = set((args.paths or ",".join((*PATHS, "provider_direct"))).split(","))
    if args.quick and args.paths is None:
        wanted -= {"litellm", "provider_direct"}

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    import ray
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    from benchmarks.fake_engine import FakeLLM, Passthrough
    from router.ingress import RouterIngress

    skipped: dict[str, str] = {}
    extra: dict[str, Any] = {}
    procs: list[subprocess.Popen[str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
            "max_tokens": args.tokens}
    base = f"http://127.0.0.1:{args.port}"
    urls: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
        "auto": (f"{base}/router/v1/chat/completions", body, {}),
        "pinned": (f"{base}/router/v1/chat/completions", {**body, "model": "fake-a"}, {}),
        "own_route": (f"{base}/fake-a", {**body, "model": "fake-a"}, {}),
        "passthrough": (f"{base}/pass", {**body, "model": "fake-a"}, {}),
    }
    t_all = time.time()
    for attempt in range(3):  # a loaded shared machine sometimes times out the node start
        try:
            ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        fake_args = {"ttft_s": args.ttft, "token_delay_s": args.token_delay, "tokens": args.tokens}
        # The router's models live in the router app as `model-<id>` (the ingress polls their replica
        # status by that name, as build() lays them out); the passthrough calls the same model-fake-a
        # replica by handle. own_route is an identical FakeLLM in its own app (a non-ingress
        # deployment has no HTTP route of its own).
        handles = {mid: DeploymentHandle(f"model-{mid}", "router") for mid in ("fake-a", "fake-b")}
        models = {mid: FakeLLM.options(name=f"model-{mid}").bind(mid, **fake_args) for mid in ("fake-a", "fake-b")}
        router = RouterIngress.options(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
        serve.run_many([
            serve.RunTarget(FakeLLM.options(name="fake-a").bind("fake-a", **fake_args), name="fake-a",
                            route_prefix="/fake-a"),
            serve.RunTarget(router.bind(router_config(model_dir(tmp)), models), name="router",
                            route_prefix="/router"),
            serve.RunTarget(Passthrough.bind(handles["fake-a"]), name="pass", route_prefix="/pass"),
        ])
        for url, b, h in urls.values():
            wait_http(url, b, 120, h)

        if "serve_llm" in wanted:
            try:
                from benchmarks import fake_serve_llm

                serve.run(fake_serve_llm.build(model_dir(tmp), **fake_args), name="serve-llm", route_prefix="/llm")
                urls["serve_llm"] = (f"{base}/llm/v1/chat/completions", {**body, "model": "fake-a"}, {})
                url, b, h = urls["serve_llm"]
                wait_http(url, b, 180, h)
            except Exception as e:  # a Ray Serve LLM internals change must not sink the other paths
                urls.pop("serve_llm", None)
                skipped["serve_llm"] = f"build_openai_app with the fake engine failed: {type(e).__name__}: {e}"[:400]

        if wanted & {"litellm", "provider_direct"}:
            fo, fo_url = start_fake_openai(args.ttft + (args.tokens - 1) * args.token_delay, 0.0)
            procs.append(fo)
            urls["provider_direct"] = (f"{fo_url}/chat/completions", {**body, "model": "fake-a"},
                                       {"authorization": "Bearer sk-bench"})
            if "litellm" in wanted:
                if Path(args.litellm_bin).exists():
                    lport = args.port + 1
                    procs.append(start_litellm(args.litellm_bin, fo_url, lport, tmp))
                    urls["litellm"] = (f"http://127.0.0.1:{lport}/v1/chat/completions",
                                       {**body, "model": "fake-a"}, {"authorization": "Bearer sk-bench-master"})
                    try:
                        wait_http(*urls["litellm"][:2], 240, urls["litellm"][2], proc=procs[-1])
                    except RuntimeError as e:
                        tail = (tmp / "litellm.log").read_text()[-300:]
                        skipped["litellm"] = f"LiteLLM proxy did not start: {e}: {tail}"
                        urls.pop("litellm")
                else:
                    skipped["litellm"] = (
                        f"{args.litellm_bin} not found; LiteLLM is installed in its own venv because "
                        "`pip install litellm` into .venv would downgrade openai 3.x->2.x, "
                        "huggingface_hub 2.x->1.x, filelock and python-dateutil, which vLLM/transformers use"
                    )
        if args.quick and "litellm" not in wanted:
            skipped.setdefault("litellm", "not run in --quick mode")
        ready_s = time.time() - t_all

        cpu = CpuMeter(tuple(p.pid for p in procs))
        # Idle CPU of the session (controller, raylet, GCS, health checks) is subtracted per cell.
        a, t_idle = cpu.snapshot(), time.perf_counter()
        time.sleep(1.0 if args.quick else 3.0)
        idle_rate = CpuMeter.delta(a, cpu.snapshot()) / (time.perf_counter() - t_idle)
        extra["idle_cpu_cores"] = round(idle_rate, 3)
        order = [p for p in ("own_route", "passthrough", "pinned", "auto", "serve_llm", "provider_direct", "litellm")
                 if p in urls and p in wanted]
        results: dict[str, dict[str, Any]] = {p: {} for p in order}
        for c in conc:
            for label in order:
                url, b, h = urls[label]
                a, t_cell = cpu.snapshot(), time.perf_counter()
                r = asyncio.run(load(url, b, c, seconds, warmup, h))
                wall = time.perf_counter() - t_cell
                used = CpuMeter.delta(a, cpu.snapshot()) - idle_rate * wall
                # CPU over warm-up + measurement, spread over the requests of both (rps x wall)
                r["cpu_ms_per_req"] = round(1000 * max(0.0, used) / max(1.0, r["rps"] * wall), 3)
                results[label][str(c)] = r
                print(f"c={c:<3} {label:<16} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                      f"{r['rps']:7.1f} rps  cpu {r['cpu_ms_per_req']:.2f} ms/req  err {r['errors']}",
                      flush=True)

        if args.profile:
            pid = replica_pid("router", "router")
            if pid:
                import threading

                box: dict[str, Any] = {}
                th = threading.Thread(
                    target=lambda: box.update(profile_router(pid, seconds + 2, RESULTS / "overhead_router.pyspy.txt"))
                )
                th.start()
                url, b, h = urls["auto"]
                asyncio.run(load(url, b, 8, seconds + 3, 0.5, h))
                th.join()
                extra["profile_router_auto_c8"] = box
            else:
                extra["profile_router_auto_c8"] = {"error": "router replica pid not found"}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM) if p.args[0] != sys.executable else p.terminate()
            except (ProcessLookupError, PermissionError):
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)

    for p in PATHS:
        if p not in results and p not in skipped:
            skipped[p] = "not requested (--paths)"
    doc = summarize(results, skipped, conc)
    doc.update(extra)
    doc.update({
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "env": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED")},
        "fake_engine": {"ttft_s": args.ttft, "token_delay_s": args.token_delay, "tokens": args.tokens,
                        "nominal_ms": round(1000 * (args.ttft + (args.tokens - 1) * args.token_delay), 1)},
        "seconds_per_cell": seconds, "warmup_s": warmup, "setup_s": round(ready_s, 1),
        "client": "aiohttp closed loop, one process (the benchmark driver), keep-alive connections",
    })
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / out_name).write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"wrote {RESULTS / out_name}")
    return 0


def summarize(results: dict[str, dict[str, Any]], skipped: dict[str, str], conc: list[int]) -> dict[str, Any]:
    def get(path: str, c: int, key: str) -> float | None:
        v = results.get(path, {}).get(str(c), {}).get(key)
        return v if isinstance(v, int | float) else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 3)

    cmax = max(conc)
    by_c = {
        str(c): {
            "auto_vs_passthrough_p50_ms": diff(get("auto", c, "p50_ms"), get("passthrough", c, "p50_ms")),
            "auto_vs_passthrough_rps_ratio": ratio(get("auto", c, "rps"), get("passthrough", c, "rps")),
            "auto_vs_own_route_p50_ms": diff(get("auto", c, "p50_ms"), get("own_route", c, "p50_ms")),
            "passthrough_vs_own_route_p50_ms": diff(get("passthrough", c, "p50_ms"), get("own_route", c, "p50_ms")),
            "auto_vs_pinned_p50_ms": diff(get("auto", c, "p50_ms"), get("pinned", c, "p50_ms")),
            "auto_vs_litellm_rps_ratio": ratio(get("auto", c, "rps"), get("litellm", c, "rps")),
        }
        for c in conc
    }
    table: dict[str, Any] = {}
    for p in PATHS:
        if p in results:
            table[p] = {c: {k: v for k, v in r.items() if k in ("p50_ms", "p99_ms", "rps")}
                        for c, r in results[p].items()}
        else:
            table[p] = None
    c_rps = 32 if 32 in conc else cmax
    return {
        **table,
        "results": results,
        "skipped": skipped,
        # p50 difference at c=1 (latency, no queueing); rps ratio at the highest concurrency run
        "auto_vs_passthrough_p50_ms": by_c[str(min(conc))]["auto_vs_passthrough_p50_ms"],
        "auto_vs_passthrough_rps_ratio": by_c[str(c_rps)]["auto_vs_passthrough_rps_ratio"],
        "auto_vs_own_route_p50_ms_c1": by_c.get("1", {}).get("auto_vs_own_route_p50_ms"),
        "auto_vs_litellm_rps_ratio_c32": by_c.get("32", {}).get("auto_vs_litellm_rps_ratio"),
        "auto_added_p99_ms_c8": diff(get("auto", 8, "p99_ms"), get("own_route", 8, "p99_ms")),
        "litellm_added_p99_ms_c8": diff(get("litellm", 8, "p99_ms"), get("provider_direct", 8, "p99_ms")),
        "summary_by_concurrency": by_c,
        "definitions": {
            "auto_vs_passthrough_p50_ms": "auto p50 - passthrough p50 at the lowest concurrency run (c=1)",
            "auto_vs_passthrough_rps_ratio": f"auto rps / passthrough rps at c={c_rps}",
            "auto_added_p99_ms_c8": "auto p99 - own_route p99 at c=8 (what the router adds over one hop)",
            "litellm_added_p99_ms_c8": "litellm p99 - provider_direct p99 at c=8 (what LiteLLM adds over "
                                       "calling the same fake OpenAI server directly)",
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md table: p50 / p99 ms and rps per path x concurrency, CPU ms per request."""
    res = doc["results"]
    cs = sorted({int(c) for r in res.values() for c in r})
    lines = ["| path | " + " | ".join(f"c={c} p50 / p99 ms, rps" for c in cs) + " | CPU ms/req (c=8) |",
             "|---|" + "---|" * (len(cs) + 1)]
    for p, r in res.items():
        cells = [f"{r[str(c)]['p50_ms']:.1f} / {r[str(c)]['p99_ms']:.1f}, {r[str(c)]['rps']:.0f}"
                 if str(c) in r else "-" for c in cs]
        cpu = r.get("8", {}).get("cpu_ms_per_req")
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {cpu if cpu is not None else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
