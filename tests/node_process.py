"""The node as a process (``scripts/dicom_node.py``), as the round-trip and two-node tests run it."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

NODE = "MURAMT"


def start_node(
    tmp: Path,
    port: int,
    return_to: str,
    quiet: float,
    log_name: str,
    *extra: str,
    ae_title: str = NODE,
    db: str | None = None,
    tls_args=None,
) -> subprocess.Popen:
    """``scripts/dicom_node.py`` on the demo checkpoint, ready once it answers C-ECHO (over TLS with ``tls_args``,
    pynetdicom's (context, host)); ``db``: its worklist (default: a SQLite file in ``tmp``)."""
    log = open(tmp / log_name, "w")
    command = [sys.executable, "scripts/dicom_node.py", "--checkpoint", "checkpoints/demo", "--ae-title", ae_title,
               "--port", str(port), "--host", "127.0.0.1", "--db", db or str(tmp / "worklist.sqlite"),
               "--store-dir", str(tmp / "store"), "--return-to", return_to, "--quiet-seconds", str(quiet),
               "--allow", "ORTHANC", *extra]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    from pynetdicom import AE

    for _ in range(300):  # ready when it answers C-ECHO
        if process.poll() is not None:
            pytest.fail(f"dicom_node.py exited: {(tmp / log_name).read_text()[-3000:]}")
        ae = AE(ae_title="ORTHANC")
        ae.add_requested_context("1.2.840.10008.1.1")
        association = ae.associate("127.0.0.1", port, ae_title=ae_title, tls_args=tls_args)
        if association.is_established:
            association.release()
            return process
        time.sleep(0.2)
    pytest.fail("dicom_node.py did not answer C-ECHO within 60 s")


def stop_node(process: subprocess.Popen, kill: bool = False) -> None:
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    process.wait(timeout=60)
