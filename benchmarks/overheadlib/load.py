"""The client side: a closed-loop load generator, percentiles, readiness and answer checks, a CPU meter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Any

# url, JSON body, headers: one path as the client sees it
Endpoint = tuple[str, dict[str, Any], dict[str, str]]


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

    def stacks(self, roots: dict[int, str], default: str = "ray_serve") -> dict[int, str]:
        """pid -> stack name: the process tree under each pid in `roots` is that stack, the rest `default`."""
        out: dict[int, str] = {}
        for p in self._procs():
            name = default
            try:
                for q in [p, *p.parents()]:
                    if q.pid in roots:
                        name = roots[q.pid]
                        break
            except self._psutil.Error:
                pass
            out[p.pid] = name
        return out


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


def wait_http(url: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None,
              proc: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    """Post until a 200 answer (or raise after `timeout` s); returns the answer's JSON."""
    import httpx

    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            r = httpx.post(url, json=body, headers=headers, timeout=60)
            if r.status_code == 200:
                return dict(r.json())
            last = f"{r.status_code} {r.text[:200]}"
        except Exception as e:
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready: {last}")


def answer_check(ep: Endpoint) -> dict[str, Any]:
    """One answer through a path: its output token count and finish reason (a deterministic-length check)."""
    url, body, headers = ep
    doc = wait_http(url, body, 60, headers)
    choice = (doc.get("choices") or [{}])[0]
    return {"completion_tokens": (doc.get("usage") or {}).get("completion_tokens"),
            "finish_reason": choice.get("finish_reason")}
