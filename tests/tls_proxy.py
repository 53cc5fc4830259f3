"""A real TLS-terminating proxy (Debian's stunnel, as a hospital puts one in front of a PACS's DICOMweb): HTTPS on
a free loopback port, forwarded to a plain HTTP server. Skipped locally without stunnel, a failure in CI (.ci/run
installs stunnel4). Debian's Orthanc 1.10 crashes on its own HTTPS (SslEnabled), hence the proxy."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port
from tests.services import required


@contextlib.contextmanager
def _running(folder: Path, cert: Path, key: Path, target_port: int) -> Iterator[int]:
    port = free_port()
    config = folder / "stunnel.conf"
    config.write_text(
        f"foreground = yes\npid =\n[https]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{target_port}\n"
        f"cert = {cert}\nkey = {key}\n"
    )
    log = open(folder / "stunnel.log", "w")
    process = subprocess.Popen([shutil.which("stunnel"), str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if process.poll() is not None:
                raise RuntimeError(f"stunnel exited: {(folder / 'stunnel.log').read_text()[-1000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("stunnel did not listen within 10 s")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def https_proxy(folder: Path, cert: Path, key: Path, target_port: int) -> Iterator[int]:
    """Yields the HTTPS port that forwards to ``target_port``, serving ``cert``."""
    folder.mkdir(parents=True, exist_ok=True)
    with required(
        shutil.which("stunnel") is not None,
        "CI must run the HTTPS delivery test: stunnel is not installed (.ci/run installs stunnel4)",
        "stunnel not installed (apt-get install stunnel4)",
        _running(folder, cert, key, target_port),
    ) as port:
        yield port
