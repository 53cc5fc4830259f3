"""The worklist in the app, for real: `python app.py --worklist-db ... --dicom-port ...` runs a DICOM node beside the
web app; a REAL Orthanc routes a study to it; a REAL Chromium sees it arrive without a reload, in its place, while
the reader's selection and scroll stay put; `/worklist` answers gradio_client; patient data needs a login off
loopback and never reaches the file route."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from mura_mt.audit import read_audit
from mura_mt.bench.worklist_fill import fill
from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.web.worklist import API_KEYS
from tests.browser import chromium
from tests.certificates import make_pki
from tests.conftest import REPO, free_port, running_app
from tests.orthanc import orthanc, route, upload, wait_for
from tests.test_hl7 import oru
from tests.test_hl7 import send as hl7_send

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "artifacts"
NODE = "MURAMT"
EARLIER = 1_700_000_000.0  # the filled studies arrived long before the test's


@pytest.fixture
def filled(tmp_path) -> str:
    """A worklist already holding 40 studies of every kind, answered by another node."""
    db = tmp_path / "worklist.sqlite"
    fill(WorklistStore(db, node="ELSEWHERE"), 40, EARLIER)
    return str(db)


def _client(url: str, auth=None):
    from gradio_client import Client

    return Client(url, verbose=False, auth=auth)


def _scroll_to(page, top: float) -> None:
    page.evaluate(f"document.querySelector('#worklist-table .html-container').scrollTop = {top}")
    page.wait_for_timeout(300)


def _viewport_scroll(page) -> float:
    return page.evaluate("document.querySelector('#worklist-table .html-container').scrollTop")


def test_a_study_from_orthanc_appears_in_the_open_page_in_its_place(filled, synthetic_root, tmp_path):
    """Also the site's evidence end to end: three studies through Orthanc, their labels back by HL7 (python-hl7's
    sender, the report before its study), by the reader's button in Chromium and by a CSV; /performance gives
    scikit-learn's figures on the same pairs and the Performance tab shows them."""
    folders = write_dicom_studies(synthetic_root, tmp_path / "studies", "valid", "explicit", seed=31, limit=3)
    files = sorted(folders[0].glob("*.dcm"))
    arriving = pydicom.dcmread(files[0])
    others = [pydicom.dcmread(sorted(folder.glob("*.dcm"))[0]) for folder in folders[1:]]
    dicom_port, orthanc_port, hl7_port = free_port(), free_port(), free_port()
    store = WorklistStore(filled, node="reader")
    with orthanc(tmp_path / "orthanc", {"node": [NODE, "127.0.0.1", dicom_port]}, dicom_port=orthanc_port) as (url, _):
        node_args = ["--worklist-db", filled, "--dicom-port", str(dicom_port), "--dicom-ae-title", NODE,
                     "--dicom-host", "127.0.0.1", "--store-dir", str(tmp_path / "node"), "--quiet-seconds", "1",
                     "--return-to", f"ORTHANC@127.0.0.1:{orthanc_port}", "--hl7-port", str(hl7_port),
                     "--hl7-host", "127.0.0.1"]  # fmt: skip
        with open(tmp_path / "app.log", "w") as log, running_app(log, None, *node_args) as (app, _), chromium() as b:
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app, wait_until="load")
            page.wait_for_selector("#worklist-table")  # with a worklist, the page opens on it
            first = store.worklist()[0][2]
            chosen, chosen_row = first["accession"], f"#worklist-table tr[data-uid='{first['study_uid']}']"
            # The reader selects a study and scrolls the list.
            page.click(chosen_row)
            page.wait_for_function(f"document.querySelector('#worklist-verdict').innerText.includes('{chosen}')")
            _scroll_to(page, 120)
            scrolled = _viewport_scroll(page)
            assert scrolled > 0

            # The RIS's report of the second study comes before the study does.
            assert hl7_send(hl7_port, oru("E2E1", str(others[0].AccessionNumber), flag="A")) == ["MSA|AA|E2E1|"]
            ids = upload(url, [path for folder in folders for path in sorted(folder.glob("*.dcm"))])
            assert route(url, "node", ids).status_code == 200
            uid = str(arriving.StudyInstanceUID)
            for study_uid in (uid, *(str(o.StudyInstanceUID) for o in others)):
                wait_for(lambda: (s := store.study(study_uid)) and s["status"] == "delivered", 120, "the node's answer")
            # No reload: within a refresh or two the open page shows the study as the node left it: delivered...
            arrived = f"#worklist-table tr[data-uid='{uid}']"
            page.wait_for_function(
                f"(document.querySelector(\"{arrived} td:nth-child(9)\") || {{}}).innerText === 'delivered'",
                timeout=20_000,
            )
            # ...while the reader's scroll and selection stay where they were...
            assert _viewport_scroll(page) == pytest.approx(scrolled, abs=2)
            assert chosen in page.inner_text("#worklist-verdict")
            assert page.locator("#worklist-table tr.selected").get_attribute("data-uid") == first["study_uid"]
            # ...and in its place: the row the store's order (the API's) gives it.
            rows = _client(app).predict("", "", 100, 0, api_name="/worklist")
            place = [row["study_uid"] for row in rows].index(uid)
            shown = page.eval_on_selector_all("#worklist-table tr[data-uid]", "rows => rows.map(r => r.dataset.uid)")
            assert shown == [row["study_uid"] for row in rows]
            assert shown.index(uid) == place
            accession = str(arriving.AccessionNumber)

            # Its row opens the study: each view beside its overlay, inside the page, warnings above the verdict.
            page.click(arrived)
            page.wait_for_function(f"document.querySelector('#worklist-verdict').innerText.includes('{accession}')")
            page.wait_for_selector("#worklist-views img", timeout=30_000)
            sources = page.eval_on_selector_all("#worklist-views img", "images => images.map(i => i.src)")
            assert len(sources) == 2 * len(files) and all(s.startswith("data:image/png;base64,") for s in sources)
            verdict = page.inner_text("#worklist-verdict")
            study = store.study(uid)
            assert f"abnormality probability {study['abnormal_prob']:.2f}" in verdict
            for warning in study["warnings"]:
                assert verdict.index(warning[:30]) < verdict.index("abnormality probability")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)

            # Marked as read: kept in the store, sunk to the bottom, the button says what it would do next.
            page.click("#worklist-read")
            page.wait_for_function("document.querySelector('#worklist-read').innerText.includes('unread')")
            rows = _client(app).predict("", "", 100, 0, api_name="/worklist")
            assert rows[-1]["study_uid"] == uid and rows[-1]["read"] and store.study(uid)["read"] == 1
            _labels_come_back_and_the_site_figures_are_scikit_learns(page, app, filled, uid, others, tmp_path)
            page.close()
        # The node's side of the audit trail: who sent each instance, where the answers went, who read the study.
        events = list(read_audit(tmp_path / "node" / "audit.jsonl", study=uid))
        received = [e for e in events if e["action"] == "instance received"]
        assert len(received) == len(files) and {(e["user"], e["remote"]) for e in received} == {("ORTHANC", "127.0.0.1")}
        assert {e["action"] for e in events} >= {"answer sent", "study opened", "study marked read"}


def _labels_come_back_and_the_site_figures_are_scikit_learns(page, app, filled, uid, others, tmp_path):
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    labels = SiteLabels(WorklistStore(filled, node="reader"))
    # The reader reads the open study: Normal, by the button.
    page.get_by_text("Record your read").click()
    page.click("#worklist-read-normal")
    wait_for(lambda: labels.current(uid) is not None, 30, "the reader's label")
    assert (labels.current(uid)["label"], labels.current(uid)["source"]) == (0, "reader")
    # The HL7 report that came first is attached to its study; a CSV labels the third and the filled studies.
    assert labels.current(str(others[0].StudyInstanceUID))["source"] == "ris"
    store = WorklistStore(filled, node="reader")
    answered = [r for r in store.worklist(limit=200)[0] if r["status"] in ("analysed", "delivered")]
    csv_rows = [(str(others[1].AccessionNumber), "1")]
    csv_rows += [(r["accession"], str(n % 2)) for n, r in enumerate(answered) if r["study_uid"] not in (
        uid, str(others[0].StudyInstanceUID), str(others[1].StudyInstanceUID))]  # fmt: skip
    (tmp_path / "labels.csv").write_text("accession,label\n" + "".join(f"{a},{v}\n" for a, v in csv_rows))
    done = subprocess.run([sys.executable, "scripts/import_labels.py", "--db", filled, str(tmp_path / "labels.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    truth = {row["study_uid"]: int(labels.current(row["study_uid"])["label"]) for row in answered}
    pairs = [(truth[r["study_uid"]], r["abnormal_prob"], int(r["is_abnormal"])) for r in answered]
    y, prob, pred = zip(*pairs)
    overall = _client(app).predict("", "", "any", api_name="/performance")["overall"]
    assert overall["n_studies"] == len(pairs) == len(answered)
    assert overall["study_kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert overall["study_auroc"] == pytest.approx(roc_auc_score(y, prob))
    # The Performance tab shows the same, with intervals, once the store changed.
    page.get_by_role("tab", name="Performance").click()
    page.get_by_label("all").check()
    page.wait_for_function(f"(document.querySelector('#performance-summary') || {{}}).innerText?.includes("
                           f"'{len(pairs)} labelled')", timeout=30_000)  # fmt: skip
    table = page.inner_text("#performance-table")
    assert "overall" in table and f"{overall['study_kappa']:.3f} [" in table
    page.wait_for_selector("#performance-reliability img")
    page.screenshot(path=str(ARTIFACTS / "performance.png"), full_page=True)


def test_the_worklist_api_pages_filters_and_refuses_bad_input(filled):
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    store = WorklistStore(filled)
    truth = {}
    for n, row in enumerate(r for r in store.worklist(limit=100)[0] if r["status"] in ("analysed", "delivered")):
        label = int(n % 3 != 0)
        SiteLabels(store).record(label, "import", "site.csv", study_uid=row["study_uid"])
        truth[row["study_uid"]] = (label, row["abnormal_prob"], int(row["is_abnormal"]))
    with running_app(subprocess.DEVNULL, None, "--worklist-db", filled) as (app, _):
        client = _client(app)
        rows = client.predict("", "", 100, 0, api_name="/worklist")
        assert len(rows) == 40 and all(tuple(row) == API_KEYS for row in rows)
        expected, _ = WorklistStore(filled).worklist()
        assert [row["study_uid"] for row in rows] == [row["study_uid"] for row in expected]
        assert rows[0]["is_abnormal"] is True and rows[0]["warnings"] == []
        assert client.predict("", "", 10, 5, api_name="/worklist") == rows[5:15]
        failed = client.predict("failed", "", 100, 0, api_name="/worklist")
        assert failed and all(r["status"] == "failed" and r["warnings"][0].startswith("failed:") for r in failed)
        since = client.predict("", "2023-11-14T22:13:50Z", 100, 0, api_name="/worklist")  # EARLIER + 30 s
        assert {r["study_uid"] for r in since} == {f"2.25.9.{n}" for n in range(30, 40)}
        for bad, message in ((("urgent", ""), "status must be one of"), (("", "yesterday"), "since must be")):
            with pytest.raises(Exception, match=message):
                client.predict(*bad, 100, 0, api_name="/worklist")
        # The reader's read by API: recorded, refused with the accepted values when wrong, never an MCP tool.
        read = client.predict(rows[0]["study_uid"], "abnormal", "wrist", "fracture", api_name="/record_read")
        assert read == {"study_uid": rows[0]["study_uid"], "label": "abnormal", "body_part": "wrist",
                        "source": "reader", "author": "anonymous"}  # fmt: skip
        assert SiteLabels(WorklistStore(filled)).current(rows[0]["study_uid"])["note"] == "fracture"
        for bad, message in ((("maybe", ""), "abnormal, normal"), (("normal", "knee"), "body_part must be")):
            with pytest.raises(Exception, match=message):
                client.predict(rows[1]["study_uid"], *bad, "", api_name="/record_read")
        with pytest.raises(Exception, match="no study"):
            client.predict("2.25.404", "normal", "", "", api_name="/record_read")
        # The site's performance: what scikit-learn gives on the same pairs (the API's read above is one more label).
        truth[rows[0]["study_uid"]] = (1, *truth[rows[0]["study_uid"]][1:])  # the reader's read supersedes
        labels, probs, preds = zip(*truth.values())
        performance = client.predict("", "", "any", api_name="/performance")
        overall = performance["overall"]
        assert overall["n_studies"] == len(truth)
        assert overall["study_kappa"] == pytest.approx(cohen_kappa_score(labels, preds))
        assert overall["study_auroc"] == pytest.approx(roc_auc_score(labels, probs)) and overall["study_auroc_ci95"]
        assert performance["drift"]["status"] in ("checked", "too few studies")  # the demo carries a reference
        with pytest.raises(Exception, match="source must be"):
            client.predict("", "", "gossip", api_name="/performance")
        # On loopback without a login the worklist and the site's figures are MCP tools beside the two analyses.
        tools = httpx.get(f"{app}gradio_api/mcp/schema", timeout=10).json()
        assert sorted(tool["name"] for tool in tools) == ["performance", "predict", "predict_study", "worklist"]


def _refused(*args: str, env: dict | None = None, process: bool = False) -> str:
    """app.py's refusal (exit status 2) and what it printed: in a process of its own, or (each process costs the
    imports, about 15 s on 2 cores) ``app.main`` in this one, which refuses before it loads anything."""
    if process:
        done = subprocess.run([sys.executable, "app.py", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120, env={**os.environ, **(env or {})})  # fmt: skip
        assert done.returncode == 2, done.stderr
        return done.stderr
    import contextlib
    import io
    from unittest import mock

    from app import main

    printed = io.StringIO()
    with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stderr(printed):
        with pytest.raises(SystemExit) as stopped:
            main(list(args))
    assert stopped.value.code == 2, printed.getvalue()
    return printed.getvalue()


def test_off_loopback_the_worklist_needs_a_login_and_https_and_a_node_needs_a_worklist(tmp_path):
    env = {"MURA_MT_AUTH": ""}
    err = _refused("--host", "0.0.0.0", "--worklist-db", str(tmp_path / "w.sqlite"), env=env, process=True)
    assert "patients' names and ids" in err and "MURA_MT_AUTH" in err
    err = _refused("--host", "0.0.0.0", "--worklist-db", str(tmp_path / "w.sqlite"), env={"MURA_MT_AUTH": "a:b"})
    assert "needs HTTPS" in err and "--ssl-certfile" in err and "--behind-https-proxy" in err
    assert "together" in _refused("--ssl-certfile", "cert.pem", env=env)
    assert "--dicom-port and --hl7-port need --worklist-db" in _refused("--dicom-port", "11112", env=env)
    assert "--dicom-port and --hl7-port need --worklist-db" in _refused("--hl7-port", "2575", env=env)
    err = _refused("--worklist-db", str(tmp_path / "w.sqlite"), "--dicom-port", "11112", env=env)
    assert "somewhere to send its answers" in err


def test_with_a_login_the_worklist_is_closed_to_strangers_and_not_an_mcp_tool(filled, tmp_path):
    env = {"MURA_MT_AUTH": "reader:s3cret-pass"}
    port = free_port()
    login_only = ("--worklist-db", filled, "--host", "0.0.0.0", "--behind-https-proxy")  # TLS ends at the proxy
    with running_app(subprocess.DEVNULL, env, *login_only) as (app, _):
        app = app.replace(str(port), str(port))
        assert len(_client(app, auth=("reader", "s3cret-pass")).predict("", "", 5, 0, api_name="/worklist")) == 5
        with pytest.raises(Exception):
            _client(app).predict("", "", 5, 0, api_name="/worklist")
        assert httpx.get(f"{app}gradio_api/mcp/sse", timeout=10).status_code == 404  # no MCP route at all
        for leak in (filled, str(REPO / "app.py")):
            assert httpx.get(f"{app}gradio_api/file={leak}", timeout=10).status_code in (401, 403, 404)
        started = time.time()
        assert httpx.get(f"{app}gradio_api/info", timeout=10).status_code in (401, 403)
        assert time.time() - started < 10


def _spki_sha256(certificate: Path) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list pins: base64 of the SHA-256 of the public key."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_over_https_the_audit_log_names_who_opened_which_study(filled, tmp_path, monkeypatch):
    """Off loopback, with a login and the app's own HTTPS (a certificate of the test's CA): gradio_client and a real
    Chromium reach it, and the audit log names ana, the study she opened and the failed login beside it."""
    pki = make_pki(tmp_path / "pki", ("app",))
    certificate, key = pki["app"]
    audit = tmp_path / "audit.jsonl"
    args = ("--worklist-db", filled, "--host", "0.0.0.0", "--ssl-certfile", str(certificate), "--ssl-keyfile",
            str(key), "--audit-log", str(audit))  # fmt: skip
    env = {"MURA_MT_AUTH": "ana:correct-horse"}
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))  # gradio_client (httpx) trusts the site's CA
    with running_app(subprocess.DEVNULL, env, *args, https_ca=pki["ca"]) as (app, _):
        assert app.startswith("https://")
        rows = _client(app, auth=("ana", "correct-horse")).predict("", "", 5, 0, api_name="/worklist")
        assert len(rows) == 5
        with pytest.raises(Exception):
            _client(app, auth=("ana", "wrong")).predict("", "", 5, 0, api_name="/worklist")
        with chromium(f"--ignore-certificate-errors-spki-list={_spki_sha256(certificate)}") as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app, wait_until="load")  # the login page, over HTTPS
            status = page.evaluate(
                "async () => (await fetch('login', {method: 'POST', body: new URLSearchParams("
                "{username: 'ana', password: 'correct-horse'})})).status"
            )  # the login form's own request, from inside the page (the cookie lands in the browser)
            assert status == 200
            page.goto(app, wait_until="load")
            opened = rows[1]
            page.click(f"#worklist-table tr[data-uid='{opened['study_uid']}']")
            page.wait_for_function(
                f"document.querySelector('#worklist-verdict').innerText.includes('{opened['accession']}')"
            )
            page.click("#worklist-reading")  # the reader records her read with the buttons
            page.click("#worklist-read-normal")
            page.wait_for_function("document.querySelector('#worklist-verdict').innerText.includes('Read: normal')")
            page.close()
    truth = SiteLabels(WorklistStore(filled)).current(opened["study_uid"])
    assert (truth["label"], truth["source"], truth["author"]) == (0, "reader", "ana")
    events = list(read_audit(audit))
    assert any(e["action"] == "study opened" and e["study_uid"] == opened["study_uid"] and e["user"] == "ana"
               and e["remote"] == "127.0.0.1" for e in events)  # fmt: skip
    assert [e["user"] for e in events if e["action"] == "login failed"] == ["ana"]
    assert {"worklist listed"} <= {e["action"] for e in events if e["user"] == "ana"}
    assert "correct-horse" not in audit.read_text() and "wrong" not in audit.read_text()
    assert audit.stat().st_mode & 0o777 == 0o600
    shown = subprocess.run([sys.executable, "scripts/audit.py", str(audit), "--user", "ana", "--study",
                            opened["study_uid"]], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "study opened" in shown.stdout and "read recorded" in shown.stdout and "2 event(s)" in shown.stdout
