"""The validators hospitals and IHE Connectathons use on DICOM objects: Pixelmed's DicomSRValidator (Debian
``pixelmed-apps`` with a headless JRE) for SR templates, and dciodvfy (Debian ``dicom3tools``) for IODs. ``.ci/run``
installs both; a test that needs one is skipped locally where it is missing and FAILS in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JARS = ("pixelmed", "commons-codec", "commons-compress", "slf4j-api")
# JDK 17 refuses Pixelmed's XSLT without lifting its XPath limits
JAVA_FLAGS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0")


def _require(installed: bool, what: str) -> None:
    if installed:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: .ci/run installs it (pixelmed-apps, default-jre-headless, dicom3tools)")
    pytest.skip(f"{what} is not installed (apt-get install pixelmed-apps default-jre-headless dicom3tools)")


def pixelmed_sr(path: str | Path) -> str:
    """DicomSRValidator's report on one SR file."""
    classpath = ":".join(f"/usr/share/java/{jar}.jar" for jar in JARS)
    _require(shutil.which("java") is not None and Path("/usr/share/java/pixelmed.jar").is_file(), "Pixelmed")
    done = subprocess.run(
        ["java", *JAVA_FLAGS, "-cp", classpath, "com.pixelmed.validate.DicomSRValidator", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.stdout + done.stderr


def dciodvfy(path: str | Path) -> str:
    """dciodvfy's report on one DICOM file (IOD modules and attributes)."""
    _require(shutil.which("dciodvfy") is not None, "dciodvfy")
    done = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def errors(report: str) -> list[str]:
    """The lines a validator marks as errors ("Error:" in Pixelmed, "Error -" in dciodvfy)."""
    return [line for line in report.splitlines() if line.startswith("Error")]
