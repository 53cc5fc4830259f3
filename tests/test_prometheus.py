"""/metrics for the hospital's monitoring: a REAL Prometheus server (Debian's, with its own config and data folder)
scrapes the endpoint and its query API returns the counts the worklist holds."""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from mura_mt.dicom_node.monitoring import DriftMonitor, SiteMetrics
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.evaluation.drift import load_reference
from tests.conftest import REPO, free_port
from tests.test_site import fill_site


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Prometheus test: apt-get install prometheus")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return found


def query(port: int, expression: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def test_a_real_prometheus_scrapes_the_counts_the_worklist_holds(tmp_path):
    binary = prometheus_binary()
    store = WorklistStore(tmp_path / "worklist.sqlite", node="NODEA")
    truth = fill_site(store, n=80, labelled=70, start=time.time() - 3600)
    metrics = SiteMetrics(store, DriftMonitor(store, load_reference(REPO / "checkpoints/demo")))
    metrics.hl7_message("accepted")
    metrics.hl7_message("accepted")
    metrics.hl7_message("rejected")
    metrics.analysis_seconds.observe(0.4)
    with pytest.raises(ValueError, match="--metrics-public"):
        metrics.serve(free_port(), "0.0.0.0")
    target = free_port()
    metrics.serve(target)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: mura-mt\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    server = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                               f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        found = []
        for _ in range(120):
            try:
                found = query(port, "mura_mt_labelled_studies")
            except OSError:
                found = []
            if found:
                break
            time.sleep(0.5)
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert float(found[0]["value"][1]) == truth["labelled"].sum() == 70
        assert float(query(port, "mura_mt_studies_analysed")[0]["value"][1]) == 80
        assert float(query(port, "mura_mt_instances_received_total")[0]["value"][1]) == 80
        assert float(query(port, 'mura_mt_hl7_messages_total{outcome="accepted"}')[0]["value"][1]) == 2
        assert float(query(port, "mura_mt_analysis_seconds_count")[0]["value"][1]) == 1
        labelled = truth[truth["labelled"]]
        sensitivity = (labelled[labelled["label"] == 1]["pred"] == 1).mean()
        assert float(query(port, "mura_mt_rolling_sensitivity")[0]["value"][1]) == pytest.approx(sensitivity)
        drift = query(port, "mura_mt_drift_p_value")
        assert {series["metric"]["test"] for series in drift} >= {"body-part mix", "unlike-the-training-images rate"}
    finally:
        server.terminate()
        server.wait(timeout=30)
        metrics.stop()
