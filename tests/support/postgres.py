"""A real PostgreSQL server for tests: the binaries the `pgserver` wheel ships (a dev dependency, so
`make test` needs no system PostgreSQL and no root), a fresh data directory, 127.0.0.1 on a free port.

`PostgresServer` runs `initdb` and `postgres` itself and stops the server by the pid it started (not
through pgserver's own lifecycle, which shares servers between processes and stops them at exit).
PostgreSQL refuses to run as root; as root (CI) the server runs as `nobody`, from a copy of the binaries
in a directory owned by it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PostgreSQL tests need the `pgserver` package (pip install -e '.[dev]')")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server of this test session. `url(db)` for a database; `stop()`/`start()` restart
    it on the same data directory (what a database restart does to its clients)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rr-pg-"))
        self.data = self.dir / "data"
        self._as: dict[str, Any] = {}
        self.bin = bin_dir()
        if os.geteuid() == 0:  # postgres will not run as root
            pw = pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            # `nobody` may not reach the venv (a checkout under a private home): a copy of the binaries, in
            # the wheel's layout (lib/ and share/ beside bin/, libpq at the RPATH $ORIGIN/../../../pgserver.libs)
            site, copy = self.bin.parents[2], self.dir / "pg"
            for part in ("bin", "lib", "share"):
                shutil.copytree(self.bin.parent / part, copy / "pgserver" / "pginstall" / part)
            shutil.copytree(site / "pgserver.libs", copy / "pgserver.libs")
            self.bin = copy / "pgserver" / "pginstall" / "bin"
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8",
             "--no-sync"],
            check=True, capture_output=True, cwd=self.dir, **self._as,
        )
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.port = self.port or _free_port()
        log = open(self.dir / "log", "ab")  # noqa: SIM115 (the server's own log; closed with the server)
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.dir), "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._as,
        )
        log.close()
        import psycopg

        end = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()[-2000:]) from None
                time.sleep(0.1)

    def log(self) -> str:
        return (self.dir / "log").read_text(errors="replace")

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the server this object started, by its pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
