"""The RIS's reports by HL7 v2 over MLLP: sent by python-hl7's ``mllp_send`` (another library than the listener's
hl7apy), parsed, recorded as labels, acknowledged; garbage and half messages leave the listener serving."""

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mura_mt.site.hl7_listener import Hl7Listener, LabelRules
from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from tests.test_worklist_store import answered, view

MLLP_SEND = Path(sys.executable).with_name("mllp_send")


def oru(control_id: str, accession: str = "", status: str = "F", flag: str = "", text: str = "No fracture.",
        study_uid: str = "", coded: str = "", sender: str = "RIS", kind: str = "ORU^R01^ORU_R01") -> str:  # fmt: skip
    """An ORU^R01 as a RIS writes one: OBR-3 accession, OBR-25 status, OBR-32 the radiologist, OBX report text."""
    obr = ["OBR", "1", "PL" + control_id, accession, "XR-WRIST^XR wrist 3 views"] + [""] * 28
    obr[7], obr[25], obr[32] = "20261203101500", status, "DR7&Reader&Ana"
    segments = [
        f"MSH|^~\\&|{sender}|HOSP|MURAMT|HOSP|20261203102000||{kind}|{control_id}|P|2.5",
        "PID|1||P-1^^^HOSP||Doe^Jane",
        f"ORC|RE|PL{control_id}",
        "|".join(obr),
        f"OBX|1|TX|18782-3^Radiology Study observation^LN||{text}||||||{status}".replace("||||||", f"|||{flag}|||"),
    ]
    if coded:
        segments.append(f"OBX|2|CWE|IMP^Impression^L||{coded}^Coded impression^L||||||{status}")
    if study_uid:
        segments.append(f"OBX|3|ST|113014^Study Instance UID^DCM||{study_uid}||||||{status}")
    return "\r".join(segments) + "\r"


def send(port: int, *messages: str) -> list[str]:
    """Send with python-hl7's command line client; the MSA segment of each ACK it prints."""
    if not MLLP_SEND.exists():
        pytest.fail("python-hl7's mllp_send is missing: pip install -e '.[dev]'")
    with tempfile.NamedTemporaryFile(suffix=".hl7") as batch:  # its stdin mode is broken in 0.4.5; --file works
        batch.write(b"".join(b"\x0b" + m.encode() + b"\x1c\r" for m in messages))
        batch.flush()
        done = subprocess.run([str(MLLP_SEND), "--port", str(port), "--file", batch.name, "127.0.0.1"],
                              capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    printed = done.stdout.decode().replace("\r", "\n").splitlines()
    return [line for line in printed if line.startswith("MSA|")]


@pytest.fixture
def site(tmp_path):
    store = WorklistStore(tmp_path / "worklist.sqlite", node="NODEA")
    answered(store, "1.2.826.0.1.1", 1.0, 0.9, True)  # accession A-1.2.826.0.1.1
    rules = tmp_path / "labels.yaml"
    rules.write_text(
        "codes:\n  RID5: abnormal\npatterns:\n  - {pattern: 'no (acute )?fracture', label: normal}\n"
        "  - {pattern: 'fracture|dislocation', label: abnormal}\n"
    )
    listener = Hl7Listener(SiteLabels(store), "127.0.0.1", 0, allow=("RIS", "LAB@127.0.0.2"),
                           rules=LabelRules.load(rules))  # fmt: skip
    listener.start()
    yield store, SiteLabels(store), listener.port
    listener.stop()


def test_final_reports_become_labels_once_and_a_correction_replaces(site):
    store, labels, port = site
    study, accession = "1.2.826.0.1.1", "A-1.2.826.0.1.1"
    acks = send(port, oru("M1", accession, flag="A", text="Distal radius fracture."), oru("M1", accession, flag="A"))
    assert acks == ["MSA|AA|M1|", "MSA|AA|M1|"]  # the same message twice: one label
    assert [(h["label"], h["source"], h["author"]) for h in labels.history(study)] == [(1, "ris", "DR7 Reader Ana")]
    assert "Distal radius fracture" in labels.current(study)["note"]
    assert send(port, oru("M2", accession, status="C", flag="N")) == ["MSA|AA|M2|"]
    assert [(h["label"], h["superseded"]) for h in labels.history(study)] == [(1, 1), (0, 0)]


def test_a_report_before_its_study_waits_and_the_uid_or_the_sites_rules_find_the_label(site):
    store, labels, port = site
    assert send(port, oru("M3", "ACC-LATER", text="Fracture of the fifth metacarpal.")) == ["MSA|AA|M3|"]
    store.add_instance(view("1.2.826.0.1.2", accession="ACC-LATER"), now=5.0)
    assert labels.current("1.2.826.0.1.2")["label"] == 1  # the pattern 'fracture', after 'no fracture' did not match
    assert send(port, oru("M4", study_uid="1.2.826.0.1.1", text="No acute fracture.")) == ["MSA|AA|M4|"]
    assert labels.current("1.2.826.0.1.1")["label"] == 0
    assert send(port, oru("M5", "A-1.2.826.0.1.1", text="See the image.", coded="RID5")) == ["MSA|AA|M5|"]
    assert labels.current("1.2.826.0.1.1")["label"] == 1


def test_what_cannot_be_used_is_refused_with_the_reason_and_changes_nothing(site):
    store, labels, port = site
    acks = send(
        port,
        oru("M6", "A-1.2.826.0.1.1", status="P", flag="A"),
        oru("M7", "A-1.2.826.0.1.1", text="Soft tissue swelling."),
        oru("M8", "A-1.2.826.0.1.1", flag="A", kind="ADT^A01^ADT_A01"),
        oru("M9", "A-1.2.826.0.1.1", flag="A", sender="LAB"),  # LAB is allowed from 127.0.0.2 only
        oru("M10", flag="A"),
    )
    assert acks[0].startswith("MSA|AE|M6|") and "not final (F) or corrected (C)" in acks[0]
    assert acks[1].startswith("MSA|AE|M7|") and "no label derivable" in acks[1]
    assert acks[2].startswith("MSA|AR|M8|") and "is not accepted; send ORU\\S\\R01" in acks[2]
    assert acks[3].startswith("MSA|AR|M9|") and "not allowed" in acks[3]
    assert acks[4].startswith("MSA|AE|M10|") and "no accession number" in acks[4]
    assert labels.history("1.2.826.0.1.1") == []


def test_garbage_half_messages_and_dropped_connections_leave_the_listener_serving(site):
    store, labels, port = site
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x0bMSH|^~\\&|RIS|HOSP", b"\x0bnot hl7 at all\x1c\r"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(junk)
            if junk.endswith(b"\x1c\r"):  # a whole frame that is not HL7: an AR, not silence
                assert b"MSA|AR||not an HL7 v2 message" in raw.recv(4096)
    assert send(port, oru("M11", "A-1.2.826.0.1.1", flag="HH")) == ["MSA|AA|M11|"]
    assert labels.current("1.2.826.0.1.1")["label"] == 1


def test_a_bad_mapping_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "labels.yaml"
    bad.write_text("patterns:\n  - {pattern: 'fracture', label: maybe}\n")
    with pytest.raises(ValueError, match="labels.yaml.*abnormal, normal"):
        LabelRules.load(bad)


@pytest.mark.slow
def test_a_label_acknowledged_before_a_kill_9_is_attached_when_its_study_comes(synthetic_root, tmp_path):
    """The node as a process: AA means durable, so a kill -9 right after it loses nothing."""
    import pydicom

    from mura_mt.data.synthetic_dicom import write_dicom_studies
    from tests.conftest import free_port
    from tests.node_process import start_node, stop_node
    from tests.test_dicom_node import _send

    [folder] = write_dicom_studies(synthetic_root, tmp_path / "dicom", "valid", seed=9, limit=1)
    views = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    uid, accession = views[0].StudyInstanceUID, views[0].AccessionNumber
    dicom_port, hl7_port = free_port(), free_port()
    args = ("--hl7-port", str(hl7_port), "--hl7-host", "127.0.0.1")
    node = start_node(tmp_path, dicom_port, "ORTHANC@127.0.0.1:9", 0.5, "node1.log", *args)
    try:
        assert send(hl7_port, oru("K1", accession, flag="A")) == ["MSA|AA|K1|"]
    finally:
        stop_node(node, kill=True)
    node = start_node(tmp_path, dicom_port, "ORTHANC@127.0.0.1:9", 0.5, "node2.log", *args)
    try:
        assert all(_send(dicom_port, dataset) == 0 for dataset in views)
        found = SiteLabels(WorklistStore(tmp_path / "worklist.sqlite", node="READER")).current(uid)
        assert found is not None and (found["label"], found["source"], found["accession"]) == (1, "ris", accession)
    finally:
        stop_node(node)


def test_with_hl7_tls_a_plain_sender_is_refused_and_a_tls_sender_with_the_sites_certificate_is_acked(tmp_path):
    """MLLP over TLS (--hl7-tls): python-hl7's plain mllp_send gets no ACK and changes nothing; python's ssl around
    MLLP frames (not the listener's code), with a certificate of the site's CA, gets AA and the label; a certificate
    of another CA is refused at the handshake. Each refusal is audited."""
    import ssl

    from mura_mt.audit import AuditLog, read_audit
    from mura_mt.dicom_node.tls import TlsFiles
    from tests.certificates import make_pki

    pki = make_pki(tmp_path / "pki", ("node", "ris"))
    store = WorklistStore(tmp_path / "worklist.sqlite", node="NODEA")
    answered(store, "1.2.826.0.1.1", 1.0, 0.9, True)
    audit = AuditLog(tmp_path / "audit.jsonl")
    listener = Hl7Listener(SiteLabels(store), "127.0.0.1", 0, audit=audit,
                           tls=TlsFiles(*pki["node"], pki["ca"]))  # fmt: skip
    listener.start()
    try:
        frame = b"\x0b" + oru("T1", "A-1.2.826.0.1.1", flag="A").encode() + b"\x1c\r"
        with tempfile.NamedTemporaryFile(suffix=".hl7") as batch:
            batch.write(frame)
            batch.flush()
            plain = subprocess.run([str(MLLP_SEND), "--port", str(listener.port), "--file", batch.name, "127.0.0.1"],
                                   capture_output=True, timeout=60)  # fmt: skip
        assert b"MSA|" not in plain.stdout  # no ACK in clear text, and no label
        assert SiteLabels(store).current("1.2.826.0.1.1") is None

        def tls_send(certificate: tuple) -> bytes:
            context = ssl.create_default_context(cafile=str(pki["ca"]))
            context.load_cert_chain(*certificate)
            with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
                    secure.sendall(frame)
                    return secure.recv(4096)

        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_send(pki["rogue"])  # TLS 1.3 reports the refused client certificate at the first read
        assert SiteLabels(store).current("1.2.826.0.1.1") is None
        assert b"MSA|AA|T1|" in tls_send(pki["ris"])
        assert SiteLabels(store).current("1.2.826.0.1.1")["label"] == 1
    finally:
        listener.stop()
    refused = [e for e in read_audit(tmp_path / "audit.jsonl") if e["action"] == "connection refused"]
    assert len(refused) == 2 and all("TLS handshake failed" in e["detail"] for e in refused)
