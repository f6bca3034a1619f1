"""Start-up (P4): `serve run cluster.yaml` to the first answered request.

    .venv/bin/python benchmarks/startup.py               # warm (models already prepared)
    .venv/bin/python benchmarks/startup.py --cold        # + cold: prepare-models into a fresh cache, then run

Runs `serve run` as a subprocess on a copy of cluster.yaml with the HTTP port changed (default 8160) and
its own fresh local Ray (`--address local`: never someone else's running cluster),
then polls `POST /v1/chat/completions` (model auto, 4 tokens) until a 200. Time 0 = just before the
subprocess starts; the run is torn down with SIGINT (serve run shuts its cluster down) after. Each run
gets its own RAY_TMPDIR, whose replica logs give a per-engine timeline (where the seconds went).
Writes benchmarks/results/startup.json: {warm_s, cold_s, warm.timeline, ...}.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def config_copy(src: Path, port: int, dst: Path, cache_dir: str | None) -> Path:
    import yaml

    cfg = yaml.safe_load(src.read_text())
    cfg.setdefault("http_options", {})["port"] = port
    cfg["http_options"]["host"] = "127.0.0.1"
    if cache_dir is not None:
        for app in cfg.get("applications", []):
            args = app.setdefault("args", {})
            if app.get("import_path") == "router.app:build":
                args["cache_dir"] = cache_dir
                for m in args.get("models") or ():
                    if m.get("app"):  # must equal its model application's args (routerctl check)
                        m["cache_dir"] = cache_dir
            elif app.get("import_path") == "router.app:build_model":
                args["cache_dir"] = cache_dir
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


_VLLM_LINE = re.compile(r"^\((\w+) pid=\d+\) \w+ (\d\d-\d\d \d\d:\d\d:\d\d) \[[\w.]+:\d+\] (.*)$")
_PHASES = (  # (key, process, text the line starts with); first match wins
    ("engine_core_up_s", "EngineCore", ""),
    ("worker_up_s", "Worker", ""),
    ("weights_loaded_s", "Worker", "Loading weights took"),
    ("engine_ready_s", "EngineCore", "init engine"),
)


def timeline(ray_tmp: Path, t0_wall: float) -> dict[str, Any]:
    """Where start-up time went, from the Ray session's replica logs (seconds after `serve run` began):
    per model replica, when its process first logged (Ray worker start + importing ray.serve.llm/vLLM),
    when vLLM's EngineCore and Worker processes (each a spawn + import) first logged, weights loaded,
    engine ready, and the replica's last line (ready to serve)."""
    year = time.gmtime(t0_wall).tm_year
    out: dict[str, Any] = {}
    for f in sorted(ray_tmp.rglob("session_*/logs/worker-*.out")):  # RAY_TMPDIR/ray/session_*/logs
        lines = f.read_text(errors="replace").splitlines()
        actor = next((ln.split(":actor_name:", 1)[1] for ln in lines[:3] if ln.startswith(":actor_name:")), "")
        if not actor.startswith("ServeReplica:"):
            continue
        name = actor.rsplit(":", 1)[-1]
        row: dict[str, Any] = {}
        for ln in lines:
            m = _VLLM_LINE.match(ln)
            if not m:
                continue
            proc, stamp, text = m.groups()
            t = calendar.timegm(time.strptime(f"{year}-{stamp}", "%Y-%m-%d %H:%M:%S")) - t0_wall
            row.setdefault("replica_first_log_s", round(t, 1))
            for key, p, prefix in _PHASES:
                if key not in row and proc == p and text.startswith(prefix):
                    row[key] = round(t, 1)
            if proc == "MainProcess":
                row["replica_last_log_s"] = round(t, 1)
        if row:
            out[name] = row
    return out


def _wait_port_free(port: int, timeout: float = 90) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"port {port} is still in use; pass --port")
        time.sleep(1)


def time_to_first_answer(
    cfg: Path, port: int, timeout: float, log: Path, env: dict[str, str], keep_logs: bool = False
) -> dict[str, Any]:
    import httpx

    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    _wait_port_free(port)  # an earlier run's proxy still answering there would be timed as this start
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))  # this run's own Ray logs, for timeline()
    env = {**env, "RAY_TMPDIR": str(ray_tmp)}
    t0_wall = time.time()
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", "--address", "local", str(cfg)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    first_http: float | None = None
    result: dict[str, Any] = {"ok": False}
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                result["error"] = f"serve run exited with {proc.returncode}; see log"
                break
            try:
                r = httpx.post(url, json=body, timeout=30)
                if first_http is None:
                    first_http = time.perf_counter() - t0
                if r.status_code == 200:
                    result = {"ok": True, "seconds": round(time.perf_counter() - t0, 1),
                              "first_http_response_s": round(first_http, 1),
                              "target": r.headers.get("x-router-target")}
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            result["error"] = f"no answer within {timeout:.0f} s"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not result["ok"]:
        result["log_tail"] = log.read_text()[-2000:]
    try:
        result["timeline"] = timeline(ray_tmp, t0_wall)
    finally:
        if keep_logs:
            result["ray_logs"] = str(ray_tmp)
        else:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    return result


def prepare_models(cfg: Path, env: dict[str, str], log: Path) -> float:
    """`routerctl prepare-models` (GGUF -> safetensors on a fresh cache): the first half of a cold start."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run([str(Path(sys.executable).parent / "routerctl"), "prepare-models", str(cfg)],
                       cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
    return round(time.perf_counter() - t0, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "cluster.yaml"))
    ap.add_argument("--port", type=int, default=8160, help="HTTP port for the copy (8100-8199)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--cold", action="store_true", help="also time a cold start (fresh cache dir)")
    ap.add_argument("--out", default="startup.json")
    ap.add_argument("--keep-logs", action="store_true", help="keep each run's Ray logs (path in the result)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OPENAI_API_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    warm = time_to_first_answer(
        config_copy(Path(args.config), args.port, tmp / "warm.yaml", None), args.port, args.timeout,
        tmp / "warm.log", env, args.keep_logs,
    )
    print("warm:", {k: v for k, v in warm.items() if k != "log_tail"}, flush=True)
    cold: dict[str, Any] | None = None
    if args.cold:
        # Cold = what `make run` does on a fresh machine after installing: prepare the models (convert the
        # packaged GGUFs into a fresh cache dir), then serve run.
        cache = tmp / "cold-cache"
        cold_env = {**env, "ROUTER_CACHE_DIR": str(cache)}
        cold_cfg = config_copy(Path(args.config), args.port, tmp / "cold.yaml", str(cache))
        prep_s = prepare_models(cold_cfg, cold_env, tmp / "prepare.log")
        cold = time_to_first_answer(cold_cfg, args.port, args.timeout, tmp / "cold.log", cold_env, args.keep_logs)
        cold["prepare_models_s"] = prep_s
        cold["serve_run_s"] = cold.get("seconds")
        if cold.get("seconds") is not None:
            cold["seconds"] = round(prep_s + cold["seconds"], 1)
        print("cold:", {k: v for k, v in cold.items() if k != "log_tail"}, flush=True)
    doc = {
        "warm_s": warm.get("seconds"),
        "cold_s": cold.get("seconds") if cold else None,
        "warm": warm,
        "cold": cold,
        "notes": None if cold else "cold start not measured in this run (pass --cold; conversion of the "
                 "packaged GGUF models adds minutes on 2 cores)",
        "goal_warm_s": 60,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/startup.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS / args.out}")
    return 0 if warm.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
