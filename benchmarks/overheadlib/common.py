"""What a backend set-up hands the measurement loop, and the LiteLLM path both backends share."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.overheadlib.load import Endpoint, wait_http
from benchmarks.overheadlib.procs import LITELLM_WHY_OWN_VENV, start_litellm

PATHS = ("auto", "pinned", "own_route", "passthrough", "serve_llm", "litellm")  # the JSON contract's keys
# Measurement order within one concurrency level (neighbouring paths see the same machine noise).
ORDER = ("own_route", "passthrough", "pinned", "auto", "serve_llm", "provider_direct", "litellm", "litellm_w2")
# LiteLLM paths -> uvicorn workers: 1 is LiteLLM's documented production setting ("use 1 Uvicorn worker"),
# 2 is one per core of this machine (--num_workers' own default: the CPU count)
LITELLM_WORKERS = {"litellm": 1, "litellm_w2": 2}


@dataclass
class Setup:
    """The deployed paths: endpoints to load, paths that could not run (with why), processes to stop."""

    urls: dict[str, Endpoint] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    layout: dict[str, str] = field(default_factory=dict)  # path -> what exactly it measures
    stacks: dict[int, str] = field(default_factory=dict)  # pid of a process outside Ray -> its stack's name
    backend: dict[str, Any] = field(default_factory=dict)
    litellm_base: str = "provider_direct"  # the path LiteLLM's added latency is measured over


def add_litellm(setup: Setup, bin_path: str, base_url: str, port: int, tmp: Path, body: dict[str, Any],
                api_key: str, timeout: float = 240, label: str = "litellm") -> None:
    """Start the LiteLLM proxy in front of `base_url` (OpenAI-compatible, `body['model']`) as path `label`."""
    if not Path(bin_path).exists():
        setup.skipped[label] = f"{bin_path} not found; {LITELLM_WHY_OWN_VENV}"
        return
    workers = LITELLM_WORKERS[label]
    proc = start_litellm(bin_path, base_url, port, tmp, model=body["model"], api_key=api_key, workers=workers)
    setup.procs.append(proc)
    setup.stacks[proc.pid] = label
    ep = (f"http://127.0.0.1:{port}/v1/chat/completions", body, {"authorization": "Bearer sk-none"})
    try:
        wait_http(*ep[:2], timeout, ep[2], proc=proc)
        if workers > 1:  # every worker up: a few answers more (each worker imports LiteLLM on its own)
            for _ in range(4 * workers):
                wait_http(*ep[:2], timeout, ep[2], proc=proc)
    except RuntimeError as e:
        tail = (tmp / f"litellm-w{workers}.log").read_text()[-300:]
        setup.skipped[label] = f"LiteLLM proxy did not start: {e}: {tail}"
        return
    setup.urls[label] = ep
