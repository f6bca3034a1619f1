"""Start-up (P4): `serve run cluster.yaml` to the first answered request.

    .venv/bin/python benchmarks/startup.py               # warm (models already prepared)
    .venv/bin/python benchmarks/startup.py --cold        # + cold: fresh ROUTER_CACHE_DIR (~4+ min)

Runs `serve run` as a subprocess on a copy of cluster.yaml with the HTTP port changed (default 8160) and
its own fresh local Ray (`--address local`: never someone else's running cluster),
then polls `POST /v1/chat/completions` (model auto, 4 tokens) until a 200. Time 0 = just before the
subprocess starts; the run is torn down with SIGINT (serve run shuts its cluster down) after.
Writes benchmarks/results/startup.json: {warm_s, cold_s, ...}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
            if app.get("import_path") == "router.app:build":
                app.setdefault("args", {})["cache_dir"] = cache_dir
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def time_to_first_answer(cfg: Path, port: int, timeout: float, log: Path, env: dict[str, str]) -> dict[str, Any]:
    import httpx

    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
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
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "cluster.yaml"))
    ap.add_argument("--port", type=int, default=8160, help="HTTP port for the copy (8100-8199)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--cold", action="store_true", help="also time a cold start (fresh cache dir)")
    ap.add_argument("--out", default="startup.json")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OPENAI_API_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    warm = time_to_first_answer(
        config_copy(Path(args.config), args.port, tmp / "warm.yaml", None), args.port, args.timeout,
        tmp / "warm.log", env,
    )
    print("warm:", {k: v for k, v in warm.items() if k != "log_tail"}, flush=True)
    cold: dict[str, Any] | None = None
    if args.cold:
        cache = tmp / "cold-cache"
        cold_env = {**env, "ROUTER_CACHE_DIR": str(cache)}
        cold = time_to_first_answer(
            config_copy(Path(args.config), args.port, tmp / "cold.yaml", str(cache)), args.port,
            args.timeout, tmp / "cold.log", cold_env,
        )
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
