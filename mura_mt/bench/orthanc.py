"""A real Orthanc for the benchmark and the tests: Debian's binary started as a plain process with its own
configuration (free ports, its own storage and index folders, an explicit plugin list, so nothing else on the
machine loads), stopped afterwards. Plus the few REST calls both need."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str | None:
    """Debian's Orthanc, or None when it is not installed (apt-get install orthanc orthanc-dicomweb)."""
    return shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


@contextlib.contextmanager
def running_orthanc(
    folder: Path,
    modalities: dict[str, list | dict],
    aet: str = "ORTHANC",
    dicom_port: int | None = None,
    extra: dict | None = None,
) -> Iterator[tuple[str, int]]:
    """Yields (REST URL, DICOM port); ``modalities``: name -> [AET, host, port] (or Orthanc's dict form, for
    ``"UseDicomTls"``); ``extra``: more configuration (DICOM TLS). RuntimeError if it cannot start."""
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    http_port, dicom_port = free_port(), dicom_port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "mura-mt",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": modalities,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "DicomScuTimeout": 30,
        "StableAge": 1,
        **(extra or {}),
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(200):
            if process.poll() is not None:
                log.flush()
                tail = (folder / "orthanc.log").read_text()[-2000:]
                raise RuntimeError(f"Orthanc exited with {process.returncode}: {tail}")
            try:
                if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("Orthanc did not answer within 20 s")
        yield url, dicom_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def upload(url: str, files: list[Path]) -> list[str]:
    """Upload DICOM files to Orthanc's REST API; returns their Orthanc instance ids."""
    ids = []
    for file in files:
        answer = httpx.post(f"{url}/instances", content=file.read_bytes(), timeout=30)
        answer.raise_for_status()
        ids.append(answer.json()["ID"])
    return ids


def route(url: str, modality: str, orthanc_ids: list[str], timeout: float = 600) -> httpx.Response:
    """Make Orthanc send instances to a modality (what a PACS routing rule does), synchronously."""
    return httpx.post(
        f"{url}/modalities/{modality}/store", json={"Resources": orthanc_ids, "Synchronous": True}, timeout=timeout
    )


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """``condition()``'s first truthy value within ``timeout`` seconds, else TimeoutError naming ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")
