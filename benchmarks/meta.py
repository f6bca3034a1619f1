"""What every in-repo benchmark result records beside its numbers: machine, load, date, command."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def write_result(result: dict[str, Any], out: str | Path, script: str, argv: list[str] | None,
                 load_before: tuple[float, ...]) -> Path:
    """Add `machine` (cpus, python, platform, load average before and after), `date` and `command`
    to `result` and write it as JSON to `out`."""
    result["machine"] = {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    result["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    result["command"] = " ".join([f"python {script}", *(sys.argv[1:] if argv is None else argv)])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
