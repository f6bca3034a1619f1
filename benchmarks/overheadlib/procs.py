"""Processes the benchmark starts besides Ray Serve: the fake OpenAI server, the LiteLLM proxy, py-spy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LITELLM_WHY_OWN_VENV = (
    "LiteLLM is installed in its own venv because `pip install litellm` into .venv would downgrade "
    "openai 3.x->2.x, huggingface_hub 2.x->1.x, filelock and python-dateutil, which vLLM/transformers use"
)


def ray_start(num_cpus: int = 8) -> None:
    import ray

    for attempt in range(3):  # a loaded shared machine sometimes times out the node start
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            return
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)


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


# LiteLLM's own production advice (docs/proxy/prod: "Best Practices for Production"), minus what needs a
# database or Redis: no callbacks, no spend/error logs, verbose off, FastAPI info logs off
# (LITELLM_LOG=ERROR), LITELLM_MODE=PRODUCTION (no .env loading), no telemetry. No master key: its check
# would be a cost our router path does not pay either (the benchmark's router has no auth configured).
LITELLM_CONFIG = (
    "litellm_settings:\n  drop_params: true\n  telemetry: false\n  set_verbose: false\n  json_logs: false\n"
    "  callbacks: []\n  success_callback: []\n  failure_callback: []\n  request_timeout: 600\n"
    "general_settings:\n  disable_spend_logs: true\n  disable_error_logs: true\n"
)
LITELLM_ENV = {"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "LITELLM_TELEMETRY": "False",
               "NO_DOCS": "True", "NO_REDOC": "True"}


def start_litellm(bin_path: str, base_url: str, port: int, tmp: Path, model: str = "fake-a",
                  api_key: str = "sk-bench", workers: int = 1) -> subprocess.Popen[str]:
    """LiteLLM proxy (`workers` uvicorn workers) serving `model` from the OpenAI server at `base_url`."""
    cfg = tmp / f"litellm-w{workers}.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {base_url}\n"
        f"      api_key: {api_key}\n"
        + LITELLM_CONFIG
    )
    env = {**os.environ, **LITELLM_ENV}
    env.pop("PYTHONPATH", None)
    for k in [k for k in env if k.startswith("RAY_")]:
        env.pop(k)
    log = open(tmp / f"litellm-w{workers}.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [bin_path, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """Stop the processes this run started (LiteLLM in its own session: its whole group)."""
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
