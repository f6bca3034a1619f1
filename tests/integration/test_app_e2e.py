"""End to end: cluster.yaml's applications (`router.app:build` + one `router.app:build_model` per model) on
real Ray Serve, two real vLLM CPU engines (SmolLM2, gemma-3), the proprietary fallback as a real HTTP
server on 127.0.0.1, and the real `openai` client.

One module-scoped app (engine start dominates the cost); the replica-kill test runs last.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
PORT = 8011
BASE = f"http://127.0.0.1:{PORT}"
PROVIDER_KEY = "sk-provider-secret-e2e"
# benchmarks/gpu_check.sh runs this module on its one-GPU variant of cluster.yaml
CONFIG = Path(os.environ.get("ROUTER_E2E_CONFIG") or ROOT / "cluster.yaml")


@pytest.fixture(scope="module")
def provider():
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key=PROVIDER_KEY, answer="Paris is the capital of France .") as server:
        yield server


@pytest.fixture(scope="module")
def app(provider, tmp_path_factory):
    """The whole cluster.yaml (router app + one application per model), deployed as `serve run` does it:
    a declarative config through the controller, each app built by its import path."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    # The router ingress (which calls the provider) reads its key from the environment it inherits from this process.
    os.environ["E2E_PROVIDER_KEY"] = PROVIDER_KEY
    cfg: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    args = cfg["applications"][0]["args"]
    args["providers"] = [
        {**args["providers"][0], "base_url": provider.base_url, "model": "fake-gpt", "api_key_env": "E2E_PROVIDER_KEY"}
    ]
    args["ingress"] = {"health_poll_s": 0.5, "replica_poll_s": 0.5}
    cfg.pop("http_options")  # the port is this test's (serve.start below)
    ray.init(address="local", num_cpus=8, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    started = time.monotonic()
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(cfg))
    names = [a["name"] for a in cfg["applications"]]

    def ready() -> bool:
        apps = serve.status().applications
        if any(apps[n].status in ("DEPLOY_FAILED", "UNHEALTHY") for n in names if n in apps):
            raise RuntimeError(f"deploy failed: {serve.status()}")
        if not all(n in apps and apps[n].status == "RUNNING" for n in names):
            return False
        targets = httpx.get(f"{BASE}/healthz", timeout=10).json()["targets"]
        return all(targets[m["id"]] == "healthy" for m in args["models"])  # the router saw them come up

    while not ready():
        assert time.monotonic() - started < 900, serve.status()
        time.sleep(1)
    print(f"app ready in {time.monotonic() - started:.0f}s")
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture()
def client(app):
    from openai import OpenAI

    return OpenAI(base_url=f"{BASE}/v1", api_key="unused", timeout=120, max_retries=0)


def _ask(client, model: str, text: str, **kw: Any):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, **kw
    )
    return raw.headers, raw.parse()


def test_pinned_smollm_answers_for_real(client):
    headers, resp = _ask(client, "smollm2-135m", "What is the capital of France?", max_tokens=40)
    assert headers["x-router-target"] == "smollm2-135m"
    assert resp.model == "smollm2-135m"
    assert "Paris" in resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 5 and resp.usage.completion_tokens > 0


def test_pinned_gemma_answers_with_bos(client):
    headers, resp = _ask(client, "gemma3-270m", "What is 12 + 7?", max_tokens=12)
    assert headers["x-router-target"] == "gemma3-270m"
    assert "19" in resp.choices[0].message.content


def test_auto_routes_to_cheapest_local_model(client):
    headers, resp = _ask(client, "auto", "Say hello.", max_tokens=8)
    assert headers["x-router-target"] == "smollm2-135m"
    assert headers["x-router-reason"]
    assert float(headers["x-router-cost-usd"]) > 0
    assert resp.model == "smollm2-135m"


def test_auto_stream_has_text_and_usage(client):
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, models = "", None, set()
    for chunk in stream:
        models.add(chunk.model)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text.strip()
    assert usage is not None and usage.completion_tokens > 0
    assert models == {"smollm2-135m"}


def test_high_min_quality_goes_to_fallback_provider(client, provider):
    before = provider.completion_count
    headers, resp = _ask(
        client, "auto", "Prove Fermat's last theorem.", max_tokens=8, extra_body={"routing": {"min_quality": 0.8}}
    )
    assert headers["x-router-target"] == "openai"
    assert resp.model == "openai"
    assert provider.completion_count == before + 1
    assert provider.completions[-1].body["model"] == "fake-gpt"


def test_tight_latency_header_goes_to_fallback(client):
    headers, _ = _ask(
        client, "auto", "hi", max_tokens=1500,
        extra_headers={"x-router-max-latency-ms": "600", "x-router-latency-metric": "e2e"},
    )
    # 1500 tokens cannot finish in 600 ms on these engines (125-190 ms/token on CPU, a few ms on a GPU);
    # the provider's prior can not either, so the policy falls back to the provider as the allowed best
    # effort.
    assert headers["x-router-target"] == "openai"


def test_unsatisfiable_without_fallback_is_422(client):
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as err:
        _ask(client, "auto", "hi", max_tokens=8, extra_body={"routing": {"min_quality": 0.95, "allow_fallback": False}})
    assert err.value.body["code"] == "constraints_unsatisfiable"


def test_completions_endpoint_and_models(client):
    resp = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=5)
    assert resp.choices[0].text
    ids = [m.id for m in client.models.list().data]
    assert ids[:1] == ["auto"] and {"smollm2-135m", "gemma3-270m", "openai"} <= set(ids)


def test_bad_requests_get_openai_error_bodies(app):
    r = httpx.post(f"{BASE}/v1/chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.post(f"{BASE}/v1/chat/completions",
                   json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = httpx.post(
        f"{BASE}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "x"}], "routing": {"max_latncy_ms": 5}},
        timeout=30,
    )
    assert r.status_code == 400 and "max_latncy_ms" in r.json()["error"]["message"]


def test_tune_collect_train_eval_on_the_live_cluster(app, tmp_path, capsys):
    """The tuning lab end to end on real answers: collect from both local models, then eval and train."""
    import json

    from policies.predictors import load_predictor
    from policies.tuning import cli
    from policies.types import Target

    bench = tmp_path / "arith.jsonl"
    pairs = [(a, b) for a, b in [(12, 7), (3, 4), (10, 5), (6, 2), (20, 1), (8, 8), (9, 3), (15, 4)]]
    bench.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                             for a, b in pairs))
    out = tmp_path / "collected.jsonl"
    argv = ["collect", "--base-url", BASE, "--targets", "smollm2-135m,gemma3-270m", "--bench", str(bench),
            "--out", str(out), "--max-tokens", "24", "--concurrency", "2", "--json"]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["target"] for r in rows} == {"smollm2-135m", "gemma3-270m"} and len(rows) == 2 * len(pairs)
    assert all(r.get("e2e_ms", 0) > 0 for r in rows)
    capsys.readouterr()

    assert cli.main(["eval", "--data", str(out), "--cv", "2", "--policies", "length", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(pairs)
    assert {"random", "oracle"} <= {p["name"] for p in report["policies"]}

    art = tmp_path / "artifact"
    assert cli.main(["train", "--data", str(out), "--kind", "logistic", "--out", str(art), "--json"]) == 0
    predictor = load_predictor(art)
    scores = predictor.predict(
        "What is 2 + 2?", [Target(id="smollm2-135m", kind="local"), Target(id="gemma3-270m", kind="local")]
    )
    assert set(scores) == {"smollm2-135m", "gemma3-270m"} and all(0 <= v <= 1 for v in scores.values())


def test_zz_killed_replica_fails_over_to_alternate(client):
    """Kill the cheapest model's replica; an auto request must still succeed, on the alternate."""
    import ray

    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "model-smollm2-135m" in a["name"]]
    assert actors, "smollm2 replica actor not found"
    for a in actors:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=False)
    headers, resp = _ask(client, "auto", "What is 2 + 2?", max_tokens=8)
    assert headers["x-router-target"] in {"gemma3-270m", "openai"}
    assert "failover" in headers["x-router-reason"] or headers["x-router-target"] != "smollm2-135m"
    assert resp.choices[0].message.content
