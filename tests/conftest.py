"""Make every run of the suite start from what a machine that never ran Ray would have.

A machine that has run Ray before keeps `/tmp/ray` (and, while a cluster runs, its address in
`/tmp/ray/ray_current_cluster`). Code that only works because that folder exists, or that joins a cluster
left running, passes there and fails on a new machine (issue 11: `ray.cluster_utils.Cluster` writing its
address file into a `/tmp/ray` that did not exist). So before any test imports Ray, Ray's default temp
folder is pointed at a new, empty folder of this run's own, and no inherited `RAY_ADDRESS` is followed:
the suite sees a fresh machine's Ray state on every machine, and leaves the real `/tmp/ray` untouched.

Tests that start Ray pass their own `_temp_dir`; this only changes what they fall back on by default.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Short path under /tmp: Ray puts unix sockets in its session folder (107-byte limit on their paths).
_FRESH = Path(tempfile.mkdtemp(prefix="rr-suite-", dir="/tmp"))
_SAVED = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ADDRESS")}
os.environ["RAY_TMPDIR"] = str(_FRESH)  # Ray's default temp folder is $RAY_TMPDIR/ray: absent, as when new
os.environ.pop("RAY_ADDRESS", None)

# Serve's fast paths as users get them from `make run` (router/serve_env.py, the one source of these
# settings), before any test starts Ray; a variable already set (e.g. by `make test`, or by hand) wins.
from router import serve_env  # noqa: E402 - after the Ray environment above, before any test imports Ray

serve_env.apply()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for k, v in _SAVED.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(_FRESH, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_ray_left_running():
    """A test that leaves Ray initialised in this process would hand its cluster to the next test."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("a test left Ray initialised in the pytest process (shut it down in its fixture)")
