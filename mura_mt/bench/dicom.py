"""The dicom block of scripts/benchmark.py: studies through Orthanc -> the node -> Orthanc, on loopback.

Synthetic DICOM studies (2-4 views) are uploaded to a real Orthanc (Debian's, started here with its own configuration)
and routed to ``scripts/dicom_node.py`` in one request; the node answers each study with its SCs and SR. Measured:
``studies_per_min`` from the routing request to the last SR stored in Orthanc, ``p50_s``/``p95_s`` from each study's
quiet period ending (its last instance received + the quiet seconds) to its SR stored in Orthanc (polled every 0.1 s),
and ``throughput_ratio``: the node's studies per minute over in-process ``Predictor.predict_study`` with Grad-CAM
on the same studies (the cost of DICOM decoding, encoding, the network and the quiet period together).
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mura_mt.bench.orthanc import free_port, orthanc_binary, route, running_orthanc, upload, wait_for

REPO = Path(__file__).resolve().parents[2]
QUIET_S = 1.0


def dicom_block(checkpoint: str, quick: bool) -> dict:
    import httpx
    import pydicom

    from mura_mt.data.synthetic import make_synthetic_mura
    from mura_mt.data.synthetic_dicom import write_dicom_studies
    from mura_mt.dicom_node.store import WorklistStore
    from mura_mt.imaging.io import load_radiograph
    from mura_mt.inference.predictor import Predictor

    if orthanc_binary() is None:
        return {"skipped": "Orthanc is not installed (apt-get install orthanc)"}
    n_studies = 4 if quick else 24
    with tempfile.TemporaryDirectory(prefix="mura-mt-bench-dicom-") as folder:
        folder = Path(folder)
        mura = make_synthetic_mura(folder / "data", max(1, n_studies // 7 + 1), max(1, n_studies // 7 + 1), seed=21,
                                   workers=1)  # fmt: skip
        studies = write_dicom_studies(mura, folder / "dicom", "valid", "explicit", seed=21, limit=n_studies)
        files = {s: sorted(s.glob("*.dcm")) for s in studies}
        uids = {s: str(pydicom.dcmread(files[s][0]).StudyInstanceUID) for s in studies}

        predictor = Predictor.from_pretrained(checkpoint, precision="auto", runtime="auto")
        predictor.predict_study([load_radiograph(str(files[studies[0]][0]))], explain=True)  # warm-up
        start = time.perf_counter()
        for s in studies:  # in process: decoding + the study with Grad-CAM, nothing else
            predictor.predict_study([load_radiograph(str(f)) for f in files[s]], explain=True)
        in_process_per_min = len(studies) / (time.perf_counter() - start) * 60

        node_port = free_port()
        with running_orthanc(folder / "orthanc", {"node": ["MURAMT", "127.0.0.1", node_port]}) as (url, dicom_port):
            node = subprocess.Popen(
                [sys.executable, str(REPO / "scripts/dicom_node.py"), "--checkpoint", checkpoint, "--ae-title",
                 "MURAMT", "--port", str(node_port), "--host", "127.0.0.1", "--db", str(folder / "node.sqlite"),
                 "--store-dir", str(folder / "node"), "--return-to", f"ORTHANC@127.0.0.1:{dicom_port}",
                 "--quiet-seconds", str(QUIET_S), "--allow", "ORTHANC"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_for(lambda: httpx.post(f"{url}/modalities/node/echo", json={}, timeout=5).status_code == 200,
                         120, "the node")  # fmt: skip
                ids = upload(url, [f for s in studies for f in files[s]])
                routed = time.time()
                route(url, "node", ids)
                receive_s = time.time() - routed  # Orthanc's synchronous C-STORE of every instance to the node
                answered: dict[Path, float] = {}
                deadline = time.time() + 600
                while len(answered) < len(studies) and time.time() < deadline:
                    with_report = _studies_with_report(url)  # one request per poll: the poll must not be the load
                    for s in studies:
                        if s not in answered and uids[s] in with_report:
                            answered[s] = time.time()
                    time.sleep(0.1)
                if len(answered) < len(studies):
                    raise TimeoutError(f"{len(studies) - len(answered)} studies were not answered within 10 minutes")
                store = WorklistStore(folder / "node.sqlite")
                latencies = [answered[s] - (store.study(uids[s])["last_instance"] + QUIET_S) for s in studies]
                store.close()
            finally:
                node.send_signal(signal.SIGTERM)
                node.wait(timeout=60)
    node_per_min = len(studies) / (max(answered.values()) - routed) * 60
    return {
        "studies": len(studies),
        "views": sum(len(v) for v in files.values()),
        "quiet_seconds": QUIET_S,
        "runtime": predictor.runtime,
        "precision": predictor.precision,
        "studies_per_min": node_per_min,
        "receive_s": receive_s,
        "answer_s": max(answered.values()) - routed - receive_s,
        "p50_s": statistics.median(latencies),
        "p95_s": sorted(latencies)[max(0, int(round(0.95 * len(latencies))) - 1)],
        "in_process_studies_per_min": in_process_per_min,
        "throughput_ratio": node_per_min / in_process_per_min,
        "goal": {"throughput_ratio": ">= 0.6"},
    }


def _studies_with_report(url: str) -> set[str]:
    import httpx

    """StudyInstanceUIDs of the studies in which Orthanc holds an SR series."""
    found = httpx.post(
        f"{url}/tools/find", json={"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True}, timeout=10
    ).json()
    parents = {series["ParentStudy"] for series in found}
    studies = httpx.post(f"{url}/tools/find", json={"Level": "Study", "Query": {}, "Expand": True}, timeout=10).json()
    return {study["MainDicomTags"]["StudyInstanceUID"] for study in studies if study["ID"] in parents}
