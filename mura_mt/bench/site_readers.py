"""Readers against the node, for the site block: does an app with pages open slow the node down?

On the app's store (the largest SQLite year), a real node (``scripts/dicom_node.py`` on the demo checkpoint, no
answers sent to DCMTK's ``storescp``) receives a synthetic DICOM study by C-STORE every 2 s, and the RIS's label of each answered study is
recorded, so the store changes as at a busy site. Measured in two phases of the same length, first with no page
open, then with 4 Performance pages (window "all") and 4 Worklist pages open in a real Chromium: the app's CPU
seconds a minute, and the node's latency from each study's last instance (sent) to its answer in the store (polled
every 50 ms), median and 95th percentile, and the ratio of the medians (goal: at most 1.2). Chromium runs at nice 19:
the pages stand for readers' workstations, not for a load on the node's machine.
"""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mura_mt.bench.orthanc import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
EVERY_S = 2.0
QUIET_S = 0.5
AE_TITLE = "MURAMT"


def readers_block(url: str, app, target: str, seconds: float) -> dict:
    """``app``: the app's psutil.Process, serving ``url`` on the store ``target``; ``seconds``: each phase's length."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None or shutil.which("storescp") is None:
        return {"readers": "skipped: chromium or DCMTK's storescp is not installed"}
    from playwright.sync_api import sync_playwright

    from mura_mt.data.synthetic import make_synthetic_mura
    from mura_mt.data.synthetic_dicom import write_dicom_studies

    per_phase = int(seconds / EVERY_S)
    with tempfile.TemporaryDirectory(prefix="mura-mt-bench-readers-") as folder:
        folder = Path(folder)
        per_part = 2 * per_phase // 7 + 2
        mura = make_synthetic_mura(folder / "data", 1, per_part, seed=41, workers=1)
        studies = write_dicom_studies(mura, folder / "dicom", "valid", "explicit", seed=41, limit=2 * per_phase + 1)
        receiver_port = free_port()
        (folder / "received").mkdir()
        receiver = subprocess.Popen(["storescp", "-aet", "ORTHANC", "-od", str(folder / "received"), str(receiver_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        node, port = _start_node(folder, target, receiver_port)
        try:
            arrivals = Arrivals(target, port)
            arrivals.send(studies[0])  # the node's first study pays its warm-up; not measured
            quiet = arrivals.phase(studies[1 : per_phase + 1], app)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, headless=True,
                                            args=["--no-sandbox", "--headless"])  # fmt: skip
                for k in range(8):
                    page = browser.new_page()
                    page.goto(url, wait_until="commit")
                    page.wait_for_selector("#worklist-table", timeout=120_000)
                    if k % 2:
                        page.get_by_role("tab", name="Performance").click()
                        page.get_by_label("all").check()
                _renice_chromium()
                read = arrivals.phase(studies[per_phase + 1 :], app)
                browser.close()
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=60)
            receiver.terminate()
            receiver.wait(timeout=30)
    return {
        "app_cpu_s_per_min_no_page": quiet["app_cpu_s_per_min"],
        "app_cpu_s_per_min_8_pages": read["app_cpu_s_per_min"],
        "node_latency_no_page_s": quiet["latency"],
        "node_latency_8_pages_s": read["latency"],
        "node_latency_ratio": round(read["latency"]["p50"] / quiet["latency"]["p50"], 2),
        "goal": {"node_latency_ratio": "<= 1.2"},
        "studies_per_phase": per_phase,
        "quiet_seconds": QUIET_S,
        "measured_s": seconds,
    }


class Arrivals:
    """Sends studies to the node one by one and times each from its last instance to its answer in the store."""

    def __init__(self, target: str, node_port: int):
        from mura_mt.dicom_node.store import WorklistStore

        self.store, self.node_port = WorklistStore(target, node="RIS"), node_port

    def send(self, study: Path) -> tuple[str, float]:
        """C-STORE the study's files; (StudyInstanceUID, when its last instance was acknowledged)."""
        import pydicom
        from pynetdicom import AE

        files = sorted(study.glob("*.dcm"))
        datasets = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title="ORTHANC")
        for dataset in datasets:
            ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        association = ae.associate("127.0.0.1", self.node_port, ae_title=AE_TITLE)
        if not association.is_established:
            raise RuntimeError("the node refused the association")
        try:
            for dataset in datasets:
                status = association.send_c_store(dataset)
                if getattr(status, "Status", None) != 0:
                    raise RuntimeError(f"the node answered C-STORE with {status}")
        finally:
            association.release()
        uid = str(datasets[0].StudyInstanceUID)
        return uid, time.time()

    def answered(self, uid: str, timeout: float = 120) -> float:
        def done():
            row = self.store.study(uid)
            return time.time() if row and row["status"] in ("analysed", "delivered") else None

        return wait_for(done, timeout, f"the answer to study {uid}", interval=0.05)

    def phase(self, studies: list[Path], app) -> dict:
        """One study every EVERY_S s (each answered, then labelled, before the next is due); the app's CPU and the
        node's latencies meanwhile."""
        from mura_mt.site.labels import SiteLabels

        labels, latencies = SiteLabels(self.store), []
        before, started = app.cpu_times(), time.time()
        for number, study in enumerate(studies):
            time.sleep(max(0.0, started + number * EVERY_S - time.time()))
            uid, last = self.send(study)
            latencies.append(self.answered(uid) - last)
            labels.record("abnormal" if number % 3 == 0 else "normal", "ris", "RIS", study_uid=uid)
        time.sleep(max(0.0, started + len(studies) * EVERY_S - time.time()))
        after, elapsed = app.cpu_times(), time.time() - started
        cpu = after.user + after.system - before.user - before.system
        ordered = sorted(latencies)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
        return {
            "app_cpu_s_per_min": round(cpu * 60 / elapsed, 1),
            "latency": {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3)},
        }


def _start_node(folder: Path, target: str, receiver_port: int) -> tuple[subprocess.Popen, int]:
    from pynetdicom import AE

    port = free_port()
    node = subprocess.Popen(
        [sys.executable, str(REPO / "scripts/dicom_node.py"), "--checkpoint", str(REPO / "checkpoints/demo"),
         "--ae-title", AE_TITLE, "--port", str(port), "--host", "127.0.0.1", "--db", target,
         "--store-dir", str(folder / "node"), "--quiet-seconds", str(QUIET_S), "--allow", "ORTHANC",
         "--return-to", f"ORTHANC@127.0.0.1:{receiver_port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def echoes() -> bool:
        if node.poll() is not None:
            raise RuntimeError(f"dicom_node.py exited with {node.returncode}")
        association = AE(ae_title="ORTHANC")
        association.add_requested_context("1.2.840.10008.1.1")
        opened = association.associate("127.0.0.1", port, ae_title=AE_TITLE)
        if opened.is_established:
            opened.release()
            return True
        return False

    wait_for(echoes, 120, "the node's C-ECHO", interval=0.3)
    return node, port


def _renice_chromium() -> None:
    """This process's Chromium at the lowest priority: its pages stand for the readers' own machines."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            if "chrom" in process.name():
                process.nice(19)
        except psutil.Error:
            pass
