"""A real Orthanc for the tests (``mura_mt.bench.orthanc``): skipped locally without one, a failure in CI, whose
.ci/run installs Debian's orthanc and orthanc-dicomweb; plus the REST reads the tests need."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from mura_mt.bench.orthanc import orthanc_binary, route, running_orthanc, upload, wait_for
from tests.services import required

__all__ = ["instance_file", "orthanc", "route", "study_series", "upload", "wait_for"]


@contextlib.contextmanager
def orthanc(
    folder: Path,
    modalities: dict[str, list | dict],
    aet: str = "ORTHANC",
    dicom_port: int | None = None,
    extra: dict | None = None,
) -> Iterator[tuple[str, int]]:
    """Yields (REST URL, DICOM port) of a running Orthanc; ``modalities``: name -> [AET, host, port] or Orthanc's
    dict form; ``extra``: more configuration."""
    with required(
        orthanc_binary() is not None,
        "CI must run the DICOM tests: Orthanc is not installed (.ci/run installs it)",
        "Orthanc not installed (apt-get install orthanc orthanc-dicomweb; .ci/run does)",
        running_orthanc(folder, modalities, aet, dicom_port, extra),
    ) as address:
        yield address


def study_series(url: str, study_uid: str) -> list[dict]:
    """Orthanc's series of a study (by StudyInstanceUID), each with its instances' ids."""
    found = httpx.post(f"{url}/tools/lookup", content=study_uid, timeout=30).json()
    studies = [f["ID"] for f in found if f["Type"] == "Study"]
    if not studies:
        return []
    return httpx.get(f"{url}/studies/{studies[0]}/series", timeout=30).json()


def instance_file(url: str, orthanc_id: str) -> bytes:
    return httpx.get(f"{url}/instances/{orthanc_id}/file", timeout=30).content
