"""A real Orthanc (Debian's package, installed by .ci/run) started as a plain process with its own configuration:
free ports, its own storage and index folders, an explicit plugin list (nothing else on the machine loads)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None:
        pytest.skip("Orthanc not installed (apt-get install orthanc orthanc-dicomweb; .ci/run does)")
    return binary


@contextlib.contextmanager
def orthanc(
    folder: Path, modalities: dict[str, list], aet: str = "ORTHANC", dicom_port: int | None = None
) -> Iterator[tuple[str, int]]:
    """Yields (REST URL, DICOM port) of a running Orthanc; ``modalities``: name -> [AET, host, port]."""
    http_port, dicom_port = free_port(), dicom_port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "mura-mt-test",
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
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([orthanc_binary(), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("Orthanc did not answer within 20 s")
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


def study_series(url: str, study_uid: str) -> list[dict]:
    """Orthanc's series of a study (by StudyInstanceUID), each with its instances' ids."""
    found = httpx.post(f"{url}/tools/lookup", content=study_uid, timeout=30).json()
    studies = [f["ID"] for f in found if f["Type"] == "Study"]
    if not studies:
        return []
    return httpx.get(f"{url}/studies/{studies[0]}/series", timeout=30).json()


def instance_file(url: str, orthanc_id: str) -> bytes:
    return httpx.get(f"{url}/instances/{orthanc_id}/file", timeout=30).content
