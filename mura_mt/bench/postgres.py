"""A real PostgreSQL for the benchmark and the tests: Debian's server (``apt-get install postgresql``), a fresh
cluster in a temporary folder on a free loopback port, stopped and removed afterwards. PostgreSQL refuses to run as
root, so as root the cluster belongs to the ``postgres`` user (``runuser``); as anyone else, to that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mura_mt.bench.orthanc import free_port

DEBIAN_BIN = Path("/usr/lib/postgresql")


def postgres_bin() -> Path | None:
    """The folder holding Debian's initdb and pg_ctl (the newest version installed), or None."""
    versions = sorted(DEBIAN_BIN.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


class Server(str):
    """The database's URL, with the server's ``stop()`` and ``start()`` (to test what an outage does)."""

    stop = start = None


@contextlib.contextmanager
def running_postgres(database: str = "mura") -> Iterator[Server]:
    """Yields the URL of database ``database`` on a new server; RuntimeError when it cannot start."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    # Not under pytest's tmp_path: its parents are root's and unreadable to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="mura-mt-pg-"))
    if as_root:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout)[-1500:]}")

    started = False
    try:
        run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "mura", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
        started = True
        run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mura", database)
        server = Server(f"postgresql://mura@127.0.0.1:{port}/{database}")
        server.stop = lambda: run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        server.start = lambda: run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                   str(folder / "log"), "-w", "start")  # fmt: skip
        yield server
    finally:
        if started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # already stopped by a test, say
                run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
