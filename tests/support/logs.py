"""Reading what a test's own Ray session wrote to disk."""

from __future__ import annotations

from pathlib import Path

_LOG_SUFFIXES = (".log", ".out", ".err", ".txt", "")


def assert_text_not_logged(ray_tmp: str | Path, secret: str, min_bytes: int = 10_000) -> int:
    """Fail if `secret` appears in any log file under the session folder; returns the bytes scanned.

    `min_bytes` guards the check itself: scanning an empty or wrong folder would pass for nothing.
    """
    scanned = 0
    for p in Path(ray_tmp).rglob("*"):
        if p.is_file() and p.suffix in _LOG_SUFFIXES:
            try:
                data = p.read_bytes()
            except OSError:
                continue
            scanned += len(data)
            assert secret.encode() not in data, f"prompt text found in {p}"
    assert scanned > min_bytes, f"only {scanned} bytes of logs under {ray_tmp}"
    return scanned
