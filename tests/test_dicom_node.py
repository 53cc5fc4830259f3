"""The DICOM node's receiving side against a REAL Orthanc: echo, studies routed by Orthanc written durably and
recorded once, resending changes nothing, strangers refused at association, hostile datasets refused while the node
keeps serving, the disk budget refuses with "out of resources", and the store and files are owner-only."""

import os
import stat

import httpx
import numpy as np
import pydicom
import pytest

from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.receive import NodeSettings, StorageNode, is_own_output, parse_allow
from mura_mt.dicom_node.store import WorklistStore
from tests.conftest import free_port
from tests.orthanc import orthanc, route, upload

pytestmark = pytest.mark.slow
NODE_AET = "MURAMT"


@pytest.fixture(scope="module")
def dicom_studies(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom-studies")
    return write_dicom_studies(synthetic_root, out, "valid", "explicit", seed=5, limit=3)


@pytest.fixture
def node(tmp_path):
    settings = NodeSettings(ae_title=NODE_AET, port=free_port(), allow=("ORTHANC",))
    store = WorklistStore(tmp_path / "node" / "worklist.sqlite")
    running = StorageNode(settings, store, tmp_path / "node" / "received")
    running.start()
    yield running
    running.stop()
    store.close()


def test_orthanc_routes_studies_to_the_node_and_nothing_is_recorded_twice(node, dicom_studies, tmp_path):
    modalities = {"node": [NODE_AET, "127.0.0.1", node.settings.port]}
    with orthanc(tmp_path / "orthanc", modalities) as (url, _):
        assert httpx.post(f"{url}/modalities/node/echo", json={}, timeout=30).status_code == 200
        files = sorted(p for folder in dicom_studies for p in folder.glob("*.dcm"))
        ids = upload(url, files)
        assert route(url, "node", ids).status_code == 200
        for folder in dicom_studies:
            first = pydicom.dcmread(next(folder.glob("*.dcm")))
            row = node.store.study(first.StudyInstanceUID)
            received = node.store.instances(first.StudyInstanceUID)
            sent = {pydicom.dcmread(p).SOPInstanceUID: p for p in folder.glob("*.dcm")}
            assert row["views"] == len(received) == len(list(folder.glob("*.dcm")))
            assert row["status"] == "receiving" and row["accession"] == first.AccessionNumber
            assert row["patient_name"] == str(first.PatientName)  # non-ASCII names intact
            for instance in received:
                stored = pydicom.dcmread(instance["path"])
                original = pydicom.dcmread(sent[instance["sop_uid"]])
                assert np.array_equal(stored.pixel_array, original.pixel_array)
                assert stat.S_IMODE(os.stat(instance["path"]).st_mode) == 0o600
        stored_files = sorted(node.store_dir.rglob("*.dcm"))
        # Resending the same instances: acknowledged, nothing new.
        assert route(url, "node", ids).status_code == 200
        assert sorted(node.store_dir.rglob("*.dcm")) == stored_files
        assert sum(node.store.study(pydicom.dcmread(next(f.glob("*.dcm"))).StudyInstanceUID)["views"]
                   for f in dicom_studies) == len(files)  # fmt: skip
    assert stat.S_IMODE(os.stat(node.store.db.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(node.store_dir).st_mode) == 0o700


def test_a_stranger_ae_title_is_refused_at_association(node, dicom_studies, tmp_path):
    modalities = {"node": [NODE_AET, "127.0.0.1", node.settings.port]}
    with orthanc(tmp_path / "stranger", modalities, aet="STRANGER") as (url, _):
        assert httpx.post(f"{url}/modalities/node/echo", json={}, timeout=30).status_code != 200
        ids = upload(url, sorted(dicom_studies[0].glob("*.dcm")))
        assert route(url, "node", ids).status_code != 200
    assert list(node.store_dir.rglob("*.dcm")) == []


def _send(port: int, dataset: pydicom.Dataset) -> int:
    """C-STORE one dataset with pynetdicom as ORTHANC (allowed); returns the status."""
    from pynetdicom import AE

    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert association.is_established
    try:
        return int(association.send_c_store(dataset).Status)
    finally:
        association.release()


def _view(folder) -> pydicom.Dataset:
    return pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])


def test_hostile_datasets_are_refused_and_the_node_keeps_serving(node, dicom_studies):
    truncated = _view(dicom_studies[0])
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 3]
    truncated.SOPInstanceUID = pydicom.uid.generate_uid()
    huge = _view(dicom_studies[0])
    huge.Rows, huge.Columns, huge.SOPInstanceUID = 60000, 60000, pydicom.uid.generate_uid()
    no_study = _view(dicom_studies[0])
    del no_study.StudyInstanceUID
    no_study.SOPInstanceUID = pydicom.uid.generate_uid()
    for hostile in (truncated, huge, no_study):
        assert _send(node.settings.port, hostile) == 0xC000
    good = _view(dicom_studies[1])
    assert _send(node.settings.port, good) == 0x0000  # still serving
    assert [i["sop_uid"] for i in node.store.instances(good.StudyInstanceUID)] == [good.SOPInstanceUID]
    assert len(list(node.store_dir.rglob("*.dcm"))) == 1


def test_own_outputs_are_acknowledged_and_never_recorded(node, dicom_studies):
    output = _view(dicom_studies[2])
    output.SOPInstanceUID, output.SeriesDescription = (
        pydicom.uid.generate_uid(),
        "mura-mt Grad-CAM (not for diagnostic use)",
    )
    assert is_own_output(output)
    assert _send(node.settings.port, output) == 0x0000
    assert node.store.study(output.StudyInstanceUID) is None and not list(node.store_dir.rglob("*.dcm"))


def test_the_disk_budget_refuses_with_out_of_resources(tmp_path, dicom_studies):
    first, second = sorted(dicom_studies[0].glob("*.dcm"))[:2]
    settings = NodeSettings(ae_title=NODE_AET, port=free_port(), max_store_bytes=int(first.stat().st_size * 1.5))
    store = WorklistStore(tmp_path / "worklist.sqlite")
    budgeted = StorageNode(settings, store, tmp_path / "received")
    budgeted.start()
    try:
        assert _send(settings.port, pydicom.dcmread(first)) == 0x0000
        assert _send(settings.port, pydicom.dcmread(second)) == 0xA700
        assert store.stored_bytes() <= settings.max_store_bytes
    finally:
        budgeted.stop()


def test_allow_entries_are_checked():
    assert parse_allow("ORTHANC, PACS@10.0.0.5,") == ("ORTHANC", "PACS@10.0.0.5")
    with pytest.raises(ValueError, match="1 to 16"):
        parse_allow("A_TITLE_MUCH_TOO_LONG")
    with pytest.raises(ValueError, match="1 to 16"):
        parse_allow("@10.0.0.5")


def test_the_store_survives_a_reopen_and_counts_a_new_view_as_a_new_answer(tmp_path):
    from mura_mt.dicom_node.store import Instance

    path = tmp_path / "w.sqlite"
    store = WorklistStore(path)
    make = lambda sop: Instance(sop, "1.2.3", "1.2.3.1", "1.2.840.10008.5.1.4.1.1.1", "CR", "WRIST", f"/x/{sop}", 10)  # noqa: E731
    assert store.add_instance(make("1.1"), now=100.0) and not store.add_instance(make("1.1"), now=101.0)
    store.close()
    reopened = WorklistStore(path)  # what a restarted node sees
    row = reopened.study("1.2.3")
    assert row["views"] == 1 and row["last_instance"] == 100.0 and row["status"] == "receiving"
    assert reopened.add_instance(make("1.2"), now=200.0) and reopened.study("1.2.3")["views"] == 2
    assert reopened.stored_bytes() == 20


def test_a_study_that_cannot_be_read_is_failed_with_why_and_the_worker_goes_on(tmp_path):
    from mura_mt.dicom_node.outputs import ModelIdentity
    from mura_mt.dicom_node.store import Instance
    from mura_mt.dicom_node.studies import StudyWorker, body_part_warning
    from mura_mt.inference.predictor import Predictor
    from tests.conftest import REPO

    store = WorklistStore(tmp_path / "w.sqlite")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM but not really")
    store.add_instance(
        Instance("9.1", "9", "9.0", "1.2.840.10008.5.1.4.1.1.1", "CR", "WRIST", str(broken), 19), now=1.0
    )
    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    worker = StudyWorker(store, predictor, ModelIdentity("m", "0" * 64, NODE_AET), tmp_path / "outbox", ["dimse"], 1.0)
    assert worker.run_once(now=10.0) == ["9"]
    row = store.study("9")
    assert row["status"] == "failed" and row["detail"]
    assert worker.run_once(now=20.0) == []  # not retried forever
    assert body_part_warning(["WRIST"], "hand").startswith("The images are labelled wrist")
    assert body_part_warning(["WRIST", ""], "wrist") is None and body_part_warning(["CHEST"], "hand") is None


def test_retain_hours_deletes_pixels_of_delivered_studies_and_keeps_their_rows(tmp_path):
    from mura_mt.dicom_node.store import Instance

    store = WorklistStore(tmp_path / "w.sqlite")
    received = tmp_path / "img.dcm"
    received.write_bytes(b"x" * 100)
    store.add_instance(
        Instance("5.1", "5", "5.0", "1.2.840.10008.5.1.4.1.1.1", "CR", "HAND", str(received), 100), now=1.0
    )
    assert store.claim("5", 1.0)
    answer = {"body_part": "hand", "abnormal_prob": 0.2, "is_abnormal": False, "warnings": []}
    assert store.record_answer("5", 1.0, answer, [("5.9", str(tmp_path / "sr.dcm"))], ["dimse"])
    assert store.forget_pixels(before=1e12) == 0  # analysed, not yet delivered: kept
    store.mark_delivered(store.deliveries("5")[0]["id"])
    assert store.study("5")["status"] == "delivered"
    assert store.forget_pixels(before=0.5) == 0  # not old enough
    assert store.forget_pixels(before=10.0) == 1 and not received.exists()
    assert store.study("5")["views"] == 1 and store.stored_bytes() == 0  # the row stays; the budget is freed


def test_a_study_that_gets_new_views_after_its_answer_is_answered_again(tmp_path, dicom_studies):
    from mura_mt.dicom_node.outputs import ModelIdentity
    from mura_mt.dicom_node.sr import read_report
    from mura_mt.dicom_node.store import Instance
    from mura_mt.dicom_node.studies import StudyWorker
    from mura_mt.inference.predictor import Predictor
    from tests.conftest import REPO

    store = WorklistStore(tmp_path / "w.sqlite")
    files = sorted(dicom_studies[0].glob("*.dcm"))
    worker = StudyWorker(store, Predictor.from_pretrained(REPO / "checkpoints/demo"),
                         ModelIdentity("m", "0" * 64, NODE_AET), tmp_path / "outbox", ["dimse"], 1.0,
                         presentation_states=False)  # fmt: skip

    def receive(path, now):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        instance = Instance(ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID, "CR",
                            ds.BodyPartExamined, str(path), path.stat().st_size)  # fmt: skip
        store.add_instance(instance, now=now)
        return ds.StudyInstanceUID

    uid = receive(files[0], now=1.0)
    assert worker.run_once(now=1.5) == []  # not quiet yet
    assert worker.run_once(now=3.0) == [uid]
    first = [d for d in store.deliveries(uid)]
    assert len(first) == 2 and store.study(uid)["status"] == "analysed"  # one SC, one SR
    receive(files[1], now=4.0)  # a late view
    assert store.study(uid)["status"] == "receiving"
    assert worker.run_once(now=6.0) == [uid]
    deliveries = store.deliveries(uid)
    assert [d["state"] for d in deliveries[:2]] == ["superseded", "superseded"] and len(deliveries) == 5
    report = read_report(pydicom.dcmread(deliveries[-1]["path"]))
    assert len(report["images"]) == 2  # the second answer covers both views


def test_an_unknown_sop_class_is_refused_at_association_and_the_node_keeps_serving(node, dicom_studies):
    from pynetdicom import AE

    bogus = _view(dicom_studies[0])
    bogus.SOPClassUID = bogus.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.999"  # not a storage class
    bogus.SOPInstanceUID = pydicom.uid.generate_uid()
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(bogus.SOPClassUID, bogus.file_meta.TransferSyntaxUID)
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", node.settings.port, ae_title=NODE_AET)
    try:
        assert association.is_established
        assert [c.abstract_syntax for c in association.accepted_contexts] == ["1.2.840.10008.1.1"]
        with pytest.raises(ValueError):
            association.send_c_store(bogus)
    finally:
        association.release()
    good = _view(dicom_studies[1])
    assert _send(node.settings.port, good) == 0x0000 and node.store.study(good.StudyInstanceUID)["views"] == 1
