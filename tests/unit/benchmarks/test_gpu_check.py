"""benchmarks/gpu_check.sh --check: the GPU check's dry run validates its own steps on CPU (no GPU, no
Ray): the GPU extra, the one-GPU config (routerctl check + each engine's ray.serve.llm LLMConfig on a GPU
share), collection of the end-to-end tests on that config, and the TTFT / tokens/s bench against a fake
OpenAI server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_dry_run_validates_its_steps() -> None:
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout
    assert r.returncode == 0, (out[-2000:], r.stderr[-2000:])
    for step in ("1/5 GPU", "2/5 install", "3/5 one-GPU config", "4/5 end-to-end", "5/5 serve run", "done in"):
        assert step in out, step
    assert "smollm2-135m: GPU share 0.4" in out and "gemma3-270m: GPU share 0.4" in out
    assert "11 tests collected" in out or "tests collected" in out
    assert "ttft_ms_p50" in out and "fake-a" in out


def test_gpu_config_keeps_the_layout_and_moves_every_engine_to_a_gpu_share(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_check import gpu_config
    from router.validate import check_serve_config

    cfg = gpu_config(ROOT / "cluster.yaml", 0.3)
    (router,) = check_serve_config(cfg)  # cross-checks: router entries still equal their apps' args
    assert [m.accelerator for m in router.models] == ["gpu", "gpu"]
    assert all(m.gpu_fraction == 0.3 and m.engine_kwargs["gpu_memory_utilization"] == 0.27 for m in router.models)
    orig = yaml.safe_load((ROOT / "cluster.yaml").read_text())["applications"][0]["args"]
    assert [m.input_price_per_mtok for m in router.models] == [m["input_price_per_mtok"] for m in orig["models"]]
    assert router.policy.name == orig["policy"]["name"]
