"""/metrics for the hospital's monitoring: a REAL Prometheus server (Debian's, with its own config and data folder)
scrapes the endpoint over HTTPS with a monitor user's basic auth, and its query API returns the counts the worklist
holds; without the monitor's credentials the endpoint answers nothing."""

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import httpx
import pytest

from mura_mt.access.gate import Access
from mura_mt.access.users import Account, Users, hash_password, write_accounts
from mura_mt.audit import AuditLog, read_audit
from mura_mt.site.monitoring import DriftMonitor, SiteMetrics
from mura_mt.dicom_node.tls import TlsFiles
from tests.certificates import make_pki
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
    users = tmp_path / "users.txt"
    write_accounts(users, [Account("mon", hash_password("monitor-secret"), frozenset({"monitor"})),
                           Account("ana", hash_password("reader-secret"), frozenset({"reader"}))])  # fmt: skip
    pki = make_pki(tmp_path / "pki", ("node",))
    access = Access(Users.load(users), audit=AuditLog(tmp_path / "audit.jsonl"))
    target = free_port()
    metrics.serve(target, access=access, tls=TlsFiles(*pki["node"], pki["ca"]))
    url = f"https://127.0.0.1:{target}/metrics"
    ca = ssl.create_default_context(cafile=str(pki["ca"]))
    assert httpx.get(url, verify=ca).status_code == 401  # no credentials
    assert httpx.get(url, verify=ca, auth=("mon", "wrong")).status_code == 401
    assert httpx.get(url, verify=ca, auth=("ana", "reader-secret")).status_code == 403  # not a monitor
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http"), timeout=5)  # no clear-text HTTP
    audited = [(e["action"], e["user"]) for e in read_audit(tmp_path / "audit.jsonl")]
    assert audited == [("login failed", "mon"), ("access refused", "ana")]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: mura-mt\n    scheme: https\n"
        f"    tls_config: {{ca_file: '{pki['ca']}'}}\n"
        "    basic_auth: {username: mon, password: monitor-secret}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
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
