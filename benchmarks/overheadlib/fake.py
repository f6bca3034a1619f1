"""The fake-engine paths: every path in front of the same fixed latency (~20 ms per answer).

The router's models live in the router app as `model-<id>` (the ingress polls their replica status by
that name, as `router.app.build()` lays them out); `passthrough` calls the same model-fake-a replica by
handle. `own_route` is an identical FakeLLM in its own app (a non-ingress deployment has no HTTP route
of its own). `serve_llm` is Ray Serve LLM's build_openai_app with a fake LLMEngine of the same latency.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.overheadlib.common import Setup, add_litellm
from benchmarks.overheadlib.load import wait_http
from benchmarks.overheadlib.procs import start_fake_openai


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


def deploy(args: argparse.Namespace, wanted: set[str], tmp: Path, body: dict[str, Any], base: str) -> Setup:
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    from benchmarks.fake_engine import FakeLLM, Passthrough
    from router.ingress import RouterIngress

    s = Setup(backend={"kind": "fake", "ttft_s": args.ttft, "token_delay_s": args.token_delay,
                       "tokens": args.tokens,
                       "nominal_ms": round(1000 * (args.ttft + (args.tokens - 1) * args.token_delay), 1)})
    s.layout = {
        "auto": "RouterIngress (app router), model auto -> model-fake-a/b (FakeLLM) in the router app",
        "pinned": "RouterIngress, model fake-a -> model-fake-a",
        "own_route": "an identical FakeLLM as its own app's HTTP route (proxy -> model replica: one hop)",
        "passthrough": "no-logic ingress -> the router app's model-fake-a replica by handle (two hops)",
        "serve_llm": "build_openai_app: OpenAiIngress -> LLMServer with a fake LLMEngine (own replicas)",
        "litellm": "LiteLLM proxy (1 uvicorn worker) -> provider_direct (the fake OpenAI HTTP server, same latency)",
        "litellm_w2": "LiteLLM proxy (2 uvicorn workers, one per core) -> provider_direct",
    }
    body_a = {**body, "model": "fake-a"}
    s.urls = {
        "auto": (f"{base}/router/v1/chat/completions", body, {}),
        "pinned": (f"{base}/router/v1/chat/completions", body_a, {}),
        "own_route": (f"{base}/fake-a", body_a, {}),
        "passthrough": (f"{base}/pass", body_a, {}),
    }
    fake_args = {"ttft_s": args.ttft, "token_delay_s": args.token_delay, "tokens": args.tokens}
    handles = {mid: DeploymentHandle(f"model-{mid}", "router") for mid in ("fake-a", "fake-b")}
    models = {mid: FakeLLM.options(name=f"model-{mid}").bind(mid, **fake_args) for mid in ("fake-a", "fake-b")}
    router = RouterIngress.options(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
    targets = [
        serve.RunTarget(FakeLLM.options(name="fake-a").bind("fake-a", **fake_args), name="fake-a",
                        route_prefix="/fake-a"),
        serve.RunTarget(router.bind(router_config(model_dir(tmp)), models), name="router", route_prefix="/router"),
        serve.RunTarget(Passthrough.bind(handles["fake-a"]), name="pass", route_prefix="/pass"),
    ]
    if "serve_llm" in wanted:
        try:  # a Ray Serve LLM internals change must not sink the other paths
            from benchmarks import fake_serve_llm

            targets.append(serve.RunTarget(fake_serve_llm.build(model_dir(tmp), **fake_args), name="serve-llm",
                                           route_prefix="/llm"))
        except Exception as e:
            s.skipped["serve_llm"] = f"build_openai_app with the fake engine failed: {type(e).__name__}: {e}"[:400]
    # All apps start together (not one after the other): on 2 shared cores that halves the set-up time.
    serve.run_many(targets, wait_for_applications_running=False)
    for url, b, h in s.urls.values():
        wait_http(url, b, 240, h)
    if "serve_llm" in wanted and "serve_llm" not in s.skipped:
        ep = (f"{base}/llm/v1/chat/completions", body_a, {})
        try:
            wait_http(ep[0], ep[1], 240, ep[2])
            s.urls["serve_llm"] = ep
        except Exception as e:
            s.skipped["serve_llm"] = f"build_openai_app with the fake engine did not answer: {e}"[:400]

    if wanted & {"litellm", "provider_direct"}:
        fo, fo_url = start_fake_openai(args.ttft + (args.tokens - 1) * args.token_delay, 0.0)
        s.procs.append(fo)
        s.stacks[fo.pid] = "fake_openai"
        s.urls["provider_direct"] = (f"{fo_url}/chat/completions", body_a, {"authorization": "Bearer sk-bench"})
        for i, label in enumerate(("litellm", "litellm_w2")):
            if label in wanted:
                add_litellm(s, args.litellm_bin, fo_url, args.port + 1 + i, tmp, body_a, api_key="sk-bench",
                            label=label)
    return s
