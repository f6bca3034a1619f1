"""The suite runs with a fresh machine's Ray state (tests/conftest.py), whatever this machine has."""

from __future__ import annotations

import os
from pathlib import Path


def test_ray_default_temp_folder_is_fresh_and_ours() -> None:
    from ray._common.utils import get_default_ray_temp_dir

    ray_tmp = Path(get_default_ray_temp_dir())
    assert ray_tmp != Path("/tmp/ray"), "the suite must not depend on (or write into) the machine's /tmp/ray"
    assert Path(os.environ["RAY_TMPDIR"]).name.startswith("rr-suite-")
    # Code that writes there without creating the folder first (issue 11) now fails on every machine:
    assert ray_tmp.parent == Path(os.environ["RAY_TMPDIR"])
    assert "RAY_ADDRESS" not in os.environ
