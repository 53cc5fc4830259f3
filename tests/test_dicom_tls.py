"""DICOM TLS both ways, against a REAL Orthanc configured for it: Orthanc sends a study to the node over TLS, the node
answers back into Orthanc over TLS and by STOW-RS over HTTPS (a real TLS proxy in front of Orthanc's DICOMweb),
verifying the receiver against the test's own CA; a plain association and one with a certificate of another CA are
refused, logged and audited, and the node keeps serving."""

import io
import time

import pydicom
import pytest

from mura_mt.audit import read_audit
from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.tls import TlsFiles
from tests.certificates import make_pki
from tests.conftest import free_port
from tests.node_process import NODE, start_node, stop_node
from tests.orthanc import instance_file, orthanc, route, study_series, upload, wait_for
from tests.tls_proxy import https_proxy

pytestmark = pytest.mark.slow
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def _echo(port: int, tls_args) -> bool:
    """Whether a C-ECHO association to the node is established (plain when ``tls_args`` is None)."""
    from pynetdicom import AE

    ae = AE(ae_title="ORTHANC")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", port, ae_title=NODE, tls_args=tls_args)
    established = association.is_established
    if established:
        association.release()
    return established


def test_the_round_trip_runs_over_dicom_tls_and_other_peers_are_refused(synthetic_root, tmp_path):
    pki = make_pki(tmp_path / "pki", ("node", "orthanc"))
    (node_cert, node_key), (orthanc_cert, orthanc_key), ca = pki["node"], pki["orthanc"], pki["ca"]
    study = write_dicom_studies(synthetic_root, tmp_path / "dicom", "valid", seed=31, limit=1)[0]
    node_port, orthanc_port = free_port(), free_port()
    tls = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(orthanc_cert),
        "DicomTlsPrivateKey": str(orthanc_key),
        "DicomTlsTrustedCertificates": str(ca),
        "DicomTlsRemoteCertificateRequired": True,
    }
    modalities = {"node": {"AET": NODE, "Host": "127.0.0.1", "Port": node_port, "UseDicomTls": True}}
    trusted = (TlsFiles(node_cert, node_key, ca).client_context(), "127.0.0.1")  # a peer the CA vouches for
    rogue = (TlsFiles(*pki["rogue"], ca).client_context(), "127.0.0.1")  # a certificate of another CA
    with (
        orthanc(tmp_path / "orthanc", modalities, dicom_port=orthanc_port, extra=tls) as (url, _),
        https_proxy(tmp_path / "proxy", orthanc_cert, orthanc_key, int(url.rsplit(":", 1)[1])) as https_port,
    ):
        node = start_node(tmp_path, node_port, f"ORTHANC@127.0.0.1:{orthanc_port}", 1.0, "node.log",
                          "--tls-cert", str(node_cert), "--tls-key", str(node_key), "--tls-ca", str(ca),
                          "--dicomweb", f"https://127.0.0.1:{https_port}/dicom-web", tls_args=trusted)  # fmt: skip
        try:
            assert not _echo(node_port, None)  # plain DICOM
            assert not _echo(node_port, rogue)
            files = sorted(study.glob("*.dcm"))
            study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
            assert route(url, "node", upload(url, files)).status_code == 200  # Orthanc -> node, over TLS

            def answered():
                kinds = [
                    pydicom.dcmread(io.BytesIO(instance_file(url, i))).SOPClassUID
                    for series in study_series(url, study_uid)
                    for i in series["Instances"]
                ]
                return kinds.count(SR_CLASS) == 1 and kinds.count(SC_CLASS) == len(files)

            wait_for(answered, 120, "the answer, sent back over TLS")  # node -> Orthanc, over TLS
            store = WorklistStore(tmp_path / "worklist.sqlite")
            wait_for(lambda: store.study(study_uid)["status"] == "delivered", 60, "both deliveries")
            assert {(d["destination"], d["state"]) for d in store.deliveries(study_uid)} == {
                ("dimse", "delivered"),
                ("stow", "delivered"),
            }  # DICOM TLS and STOW-RS over HTTPS
            assert _echo(node_port, trusted)  # still serving after the refusals
            time.sleep(0.5)
            log = (tmp_path / "node.log").read_text()
            assert log.count("TLS handshake failed") >= 2 and "refused a DICOM connection from 127.0.0.1" in log
            audit = list(read_audit(tmp_path / "store" / "audit.jsonl"))
            refused = [e for e in audit if e["action"] == "association refused"]
            assert len(refused) == 2 and all("TLS handshake failed" in e["detail"] for e in refused)
            assert {e["remote"] for e in refused} == {"127.0.0.1"}
            received = [e for e in audit if e["action"] == "instance received"]
            assert len(received) == len(files) and {e["user"] for e in received} == {"ORTHANC"}
        finally:
            stop_node(node)


def test_tls_options_come_together_and_unreadable_files_are_refused_at_start(tmp_path):
    from argparse import Namespace

    with pytest.raises(ValueError, match="missing --tls-key, --tls-ca"):
        TlsFiles.from_args(Namespace(tls_cert="a.pem", tls_key=None, tls_ca=None))
    with pytest.raises(ValueError, match="cannot use the TLS files"):
        TlsFiles.from_args(Namespace(tls_cert=str(tmp_path / "no.pem"), tls_key="k", tls_ca="c"))
    assert TlsFiles.from_args(Namespace(tls_cert=None, tls_key=None, tls_ca=None)) is None
