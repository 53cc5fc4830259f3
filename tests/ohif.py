"""The OHIF viewer for real: the released build from the npm registry (``@ohif/app``: its package holds the built
viewer under dist/; ``.ci/run`` unpacks it into ``OHIF_DIST``), served by a real nginx with our data source
configuration, in front of Orthanc's DICOMweb (Debian's ``orthanc-dicomweb``) on the same origin, as a site sets it
up (docs/site-setup.md shows the same configuration)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port
from tests.nginx import nginx_binary, running_nginx
from tests.services import required

OHIF_VERSION = "3.13.2"
OHIF_DIST = Path(os.environ.get("MURA_MT_OHIF", Path.home() / ".cache" / "mura-mt" / f"ohif-{OHIF_VERSION}"))
# The viewer's configuration: one DICOMweb data source, Orthanc's, under the viewer's own origin.
APP_CONFIG = """window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  showLoadingIndicator: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  // OHIF 3.13 reads the first coordinate of every SR measurement group before it draws any; the whole-image groups
  // of a TID 1500 report (IHE AI Results) have none, and the viewer stops there. Given one empty coordinate, they
  // are listed and not drawn, and the region groups are drawn.
  customizationService: [
    {
      onBeforeSRAddMeasurement: {
        $set: ({ measurement }) => (measurement.coords?.length ? measurement : { ...measurement, coords: [{}] }),
      },
    },
  ],
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc',
        name: 'orthanc',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
"""
NGINX = """
  include /etc/nginx/mime.types;
  types {{ application/wasm wasm; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location = /app-config.js {{ alias {folder}/app-config.js; }}
    location /dicom-web/ {{ proxy_pass http://127.0.0.1:{orthanc}/dicom-web/; proxy_buffering off; }}
    location /wado {{ proxy_pass http://127.0.0.1:{orthanc}/wado; }}
    location / {{ try_files $uri $uri/ /index.html; }}
  }}
}}
"""


def ohif_installed() -> bool:
    return (OHIF_DIST / "index.html").is_file() and nginx_binary() is not None


@contextlib.contextmanager
def running_ohif(folder: Path, orthanc_http_port: int) -> Iterator[str]:
    """Yields the URL of OHIF's viewer served by nginx, reading Orthanc's DICOMweb on ``orthanc_http_port``."""
    with required(
        ohif_installed(),
        f"CI must run the OHIF test: the viewer is not unpacked in {OHIF_DIST} or nginx is missing (.ci/run does it)",
        f"OHIF's viewer is not unpacked in {OHIF_DIST} (.ci/run: npm pack @ohif/app@{OHIF_VERSION})",
        _serve(folder, orthanc_http_port),
    ) as url:
        yield url


@contextlib.contextmanager
def _serve(folder: Path, orthanc_http_port: int) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app-config.js").write_text(APP_CONFIG)
    port = free_port()
    config = NGINX.format(folder=folder, port=port, root=OHIF_DIST, orthanc=orthanc_http_port)
    with running_nginx(folder, port, config) as url:
        yield url


def open_report(browser, viewer: str, study_uid: str, report_series_uid: str, screenshot: Path) -> dict:
    """Open the study in OHIF with its SR in the viewport (``initialSeriesInstanceUID``), as a radiologist would
    double-click it; returns the viewport's screenshot as an RGB array and the canvas's box (x, y, width, height in
    the screenshot's pixels)."""
    import io

    import numpy as np
    from PIL import Image

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{viewer}/viewer?StudyInstanceUIDs={study_uid}&initialSeriesInstanceUID={report_series_uid}")
    for first_visit in ("Skip all", "Confirm and hide"):  # the viewer's tour and its investigational-use notice
        with contextlib.suppress(Exception):
            page.get_by_text(first_visit).click(timeout=20_000)
    page.get_by_text("Probability:").first.wait_for(timeout=120_000)  # the SR's region group, drawn with its label
    time.sleep(2)  # the last render
    canvas = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    page.screenshot(path=str(screenshot))
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    page.close()
    return {"pixels": picture, "canvas": (canvas["x"], canvas["y"], canvas["width"], canvas["height"])}
