"""The whole node against a REAL Orthanc: Orthanc routes studies to `scripts/dicom_node.py`, which answers in the same
study with one Secondary Capture per view and an SR whose values equal `Predictor.predict_study` on the same pixels;
MONOCHROME1 and JPEG 2000 studies are answered, a CT study is skipped, resending changes nothing; a kill -9 between
acknowledgement and analysis loses nothing, and a destination that is down gets the answer, once, when it is back."""

import io
import os
import time
from pathlib import Path

import pydicom
import pytest

from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.outputs import read_report
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.imaging.io import load_radiograph
from mura_mt.inference.predictor import Predictor
from tests.conftest import REPO, free_port
from tests.node_process import start_node, stop_node
from tests.orthanc import instance_file, orthanc, route, study_series, upload, wait_for

pytestmark = pytest.mark.slow
NODE = "MURAMT"
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


def _ct_study(folder: Path, out: Path) -> Path:
    """A copy of a study as CT slices: nothing for the node to analyse."""
    out.mkdir(parents=True)
    study_uid = pydicom.uid.generate_uid()
    for number, file in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(file)
        ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, pydicom.uid.generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(out / f"CT{number}.dcm", enforce_file_format=True)
    return out


def _answers(url: str, study_uid: str) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    """(secondary captures, SRs) Orthanc holds for a study."""
    captures, reports = [], []
    for series in study_series(url, study_uid):
        for orthanc_id in series["Instances"]:
            ds = pydicom.dcmread(io.BytesIO(instance_file(url, orthanc_id)))
            if ds.SOPClassUID == SC_CLASS:
                captures.append(ds)
            elif ds.SOPClassUID == SR_CLASS:
                reports.append(ds)
    return captures, reports


@pytest.fixture(scope="module")
def studies(synthetic_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip-studies")
    plain = write_dicom_studies(synthetic_root, root / "plain", "valid", "explicit", seed=11, limit=3)
    jpeg = write_dicom_studies(synthetic_root, root / "j2k", "valid", "jpeg2000", seed=12, limit=1)
    return {"plain": plain, "jpeg2000": jpeg, "ct": _ct_study(plain[0], root / "ct")}


def test_orthanc_round_trip(studies, tmp_path):
    node_port, orthanc_port = free_port(), free_port()
    reference = Predictor.from_pretrained(REPO / "checkpoints/demo", precision="auto", runtime="auto")
    with orthanc(tmp_path / "orthanc", {"node": [NODE, "127.0.0.1", node_port]}, dicom_port=orthanc_port) as (url, _):
        node = start_node(tmp_path, node_port, f"ORTHANC@127.0.0.1:{orthanc_port}", 1.0, "node.log",
                           "--dicomweb", f"{url}/dicom-web")  # fmt: skip
        try:
            folders = [*studies["plain"], *studies["jpeg2000"], studies["ct"]]
            ids = upload(url, [f for folder in folders for f in sorted(folder.glob("*.dcm"))])
            assert route(url, "node", ids).status_code == 200
            analysed = [*studies["plain"], *studies["jpeg2000"]]
            for folder in analysed:
                files = sorted(folder.glob("*.dcm"))
                originals = [pydicom.dcmread(f) for f in files]
                study_uid = originals[0].StudyInstanceUID
                captures, reports = wait_for(
                    lambda: (a := _answers(url, study_uid))[1] and len(a[0]) == len(files) and a,
                    120,
                    f"the answer to {folder.name}",
                )
                assert len(reports) == 1 and len(captures) == len(files)  # one SC per view, one SR
                expected = reference.predict_study([load_radiograph(str(f)) for f in files])
                answer = read_report(reports[0])
                assert answer["abnormal_prob"] == pytest.approx(expected.abnormal_prob, abs=1e-4)
                assert 0.0 <= answer["abnormal_prob"] <= 1.0 and answer["body_part"] == expected.body_part
                assert answer["verdict"] == ("abnormal" if expected.is_abnormal else "normal")
                assert sorted(answer["images"]) == sorted(o.SOPInstanceUID for o in originals)
                for made in (*captures, *reports):
                    assert made.StudyInstanceUID == study_uid and made.PatientName == originals[0].PatientName
                    assert (
                        made.PatientID == originals[0].PatientID
                        and made.AccessionNumber == originals[0].AccessionNumber
                    )
                    assert (
                        made.SeriesDescription.startswith("mura-mt")
                        and "NOT FOR DIAGNOSTIC USE" in made.SeriesDescription
                    )
                    assert made.SeriesInstanceUID != originals[0].SeriesInstanceUID
                for capture in captures:
                    assert capture.BurnedInAnnotation == "YES" and capture.PhotometricInterpretation == "RGB"
                    assert "WindowCenter" not in capture and "RescaleSlope" not in capture
            photometrics = {pydicom.dcmread(next(f.glob("*.dcm"))).PhotometricInterpretation for f in analysed}
            assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
            store = WorklistStore(tmp_path / "worklist.sqlite")
            ct_uid = pydicom.dcmread(next(studies["ct"].glob("*.dcm"))).StudyInstanceUID
            assert store.study(ct_uid)["status"] == "skipped" and "CT" in store.study(ct_uid)["detail"]
            assert _answers(url, ct_uid) == ([], [])
            first_uid = pydicom.dcmread(next(analysed[0].glob("*.dcm"))).StudyInstanceUID
            wait_for(lambda: store.study(first_uid)["status"] == "delivered", 60, "delivery")
            assert {d["destination"] for d in store.deliveries(first_uid)} == {"dimse", "stow"}
            assert {d["state"] for d in store.deliveries(first_uid)} == {"delivered"}
            # The same instances routed again: acknowledged, nothing new.
            series_before = {f.name: len(study_series(url, pydicom.dcmread(next(f.glob("*.dcm"))).StudyInstanceUID))
                             for f in analysed}  # fmt: skip
            assert route(url, "node", ids).status_code == 200
            time.sleep(3)  # longer than the quiet period
            for folder in analysed:
                uid = pydicom.dcmread(next(folder.glob("*.dcm"))).StudyInstanceUID
                assert len(study_series(url, uid)) == series_before[folder.name]
                assert len(store.deliveries(uid)) == 2 * (len(list(folder.glob("*.dcm"))) + 1)
        finally:
            stop_node(node)


def _send(port: int, files: list[Path]) -> None:
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="ORTHANC")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title=NODE)
    assert association.is_established
    try:
        assert [int(association.send_c_store(ds).Status) for ds in datasets] == [0] * len(datasets)
    finally:
        association.release()


def test_kill_minus_9_loses_nothing_and_a_destination_that_was_down_gets_the_answer_once(studies, tmp_path):
    node_port, orthanc_port = free_port(), free_port()
    files = sorted(studies["plain"][1].glob("*.dcm"))
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    return_to = f"ORTHANC@127.0.0.1:{orthanc_port}"
    node = start_node(tmp_path, node_port, return_to, 300.0, "node1.log")  # never quiet before the kill
    _send(node_port, files)  # acknowledged...
    stop_node(node, kill=True)  # ...and killed before any analysis
    store = WorklistStore(tmp_path / "worklist.sqlite")
    assert store.study(study_uid)["views"] == len(files) and store.study(study_uid)["status"] == "receiving"
    node = start_node(tmp_path, node_port, return_to, 1.0, "node2.log")  # the destination is still down
    try:
        wait_for(lambda: any(d["attempts"] >= 1 for d in store.deliveries(study_uid)), 60, "a failed delivery")
        assert store.study(study_uid)["status"] == "analysed" and store.study(study_uid)["delivery"].startswith(
            "retrying"
        )
        with orthanc(tmp_path / "orthanc", {}, dicom_port=orthanc_port) as (url, _):  # the destination comes back
            wait_for(
                lambda: store.study(study_uid)["status"] == "delivered", 90, "delivery after the destination came back"
            )
            captures, reports = _answers(url, study_uid)
            assert len(reports) == 1 and len(captures) == len(files)  # each object once
    finally:
        stop_node(node)
    deliveries = store.deliveries(study_uid)
    assert len(deliveries) == len(files) + 1 and {d["state"] for d in deliveries} == {"delivered"}
    assert len({d["sop_uid"] for d in deliveries}) == len(deliveries)  # analysed once: one set of objects
    assert os.path.exists(tmp_path / "worklist.sqlite")
