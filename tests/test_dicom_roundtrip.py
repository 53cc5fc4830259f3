"""The whole node against a REAL Orthanc: Orthanc routes studies to `scripts/dicom_node.py`, which answers in the same
study with one Secondary Capture per view, a TID 1500 SR whose values, read back with highdicom, equal
`Predictor.predict_study` on the same pixels, view by view, with each view's region of evidence (a closed outline
inside the image around the peak of the Predictor's own Grad-CAM map), and a presentation state per view with a
region; Pixelmed and dciodvfy find no error in what comes back;
MONOCHROME1, JPEG 2000, a real CR and a CR without the usual Type 2 attributes, spacing, orientation or laterality
are answered, a CT study is skipped, resending changes nothing; a kill -9 between acknowledgement and analysis loses
nothing, and a destination that is down gets the answer, once, when it is back."""

import io
import os
import time
from pathlib import Path

import pydicom
import pytest

from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.sr import read_report
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.imaging.io import load_radiograph
from mura_mt.inference.predictor import Predictor
from tests.conftest import REPO, free_port
from tests.node_process import start_node, stop_node
from tests.orthanc import instance_file, orthanc, route, study_series, upload, wait_for
from tests.validators import dciodvfy, errors, pixelmed_sr

pytestmark = pytest.mark.slow
ARTIFACTS = Path(os.environ.get("MURA_MT_ARTIFACTS", REPO / "artifacts"))
NODE = "MURAMT"
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"
PR_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State


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


# what many older CR systems leave out; the node must answer such a study all the same
SPARSE_HEADER = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime",
                 "AccessionNumber", "BodyPartExamined", "StudyDescription", "ViewPosition", "Laterality",
                 "PatientOrientation", "ImagerPixelSpacing")  # fmt: skip


def _sparse_study(folder: Path, out: Path) -> Path:
    """A copy of a study as the sparsest CR the node accepts: patient id and name, UIDs, pixels, little else."""
    out.mkdir(parents=True)
    for file in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(file)
        for keyword in SPARSE_HEADER:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(out / file.name, enforce_file_format=True)
    return out


def _real_study(out: Path) -> Path:
    """A real CR (pydicom-data's RG3, a lower leg: unlike MURA, so its answer carries a warning)."""
    import shutil

    import data_store

    out.mkdir(parents=True)
    shutil.copy(Path(data_store.__file__).parent / "data" / "RG3_UNCR.dcm", out / "RG3_UNCR.dcm")
    return out


def _check_sr(report: pydicom.Dataset, expected, originals: list[pydicom.Dataset]) -> dict:
    """The SR read back with highdicom equals the Predictor's answer, for the study and for each view."""
    answer = read_report(report)
    assert answer["abnormal_prob"] == pytest.approx(expected.abnormal_prob, abs=1e-4)
    assert 0.0 <= answer["abnormal_prob"] <= 1.0 and answer["body_part"] == expected.body_part
    assert answer["verdict"] == ("abnormal" if expected.is_abnormal else "normal")
    assert answer["threshold"] == pytest.approx(expected.threshold)
    assert set(expected.warnings) <= set(answer["warnings"])
    assert sorted(answer["images"]) == sorted(o.SOPInstanceUID for o in originals)
    by_image = {view["images"][0]: view for view in answer["views"]}
    assert len(answer["views"]) == len(originals) == len(by_image)
    for original, view in zip(originals, expected.views):
        read = by_image[original.SOPInstanceUID]
        assert read["abnormal_prob"] == pytest.approx(view.abnormal_prob, abs=1e-4)
        assert read["verdict"] == ("abnormal" if view.is_abnormal else "normal") and read["warnings"] == view.warnings
        _check_region(read, view, original)
    return answer


def _check_region(read: dict, view, original: pydicom.Dataset) -> None:
    """The view's region in the SR: closed, inside the image, around the peak of the Predictor's own map."""
    from mura_mt.inference.region import contains

    assert view.heatmap is not None and view.heatmap.shape == (original.Rows, original.Columns)
    if view.region is None:
        assert read["region"] is None and read["no_region_said"]
        return
    region = read["region"]
    assert region is not None and region["image"] == original.SOPInstanceUID
    assert region["finding_type"] == "Region of the model's evidence, not a delineated lesion"
    outline = region["outline"]
    assert len(outline) >= 4 and outline[0] == outline[-1]
    assert all(0 <= x <= original.Columns and 0 <= y <= original.Rows for x, y in outline)
    row, column = divmod(int(view.heatmap.argmax()), view.heatmap.shape[1])
    assert contains(outline, column + 0.5, row + 0.5)


def _check_states(states: list[pydicom.Dataset], expected, originals: list[pydicom.Dataset]) -> None:
    """One presentation state per view with a region: it references that view and draws the SR's outline."""
    by_image = {o.SOPInstanceUID: (o, v) for o, v in zip(originals, expected.views)}
    for state in states:
        annotation = state.GraphicAnnotationSequence[0]
        original, view = by_image[annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID]
        drawn = annotation.GraphicObjectSequence[0]
        assert drawn.GraphicType == "POLYLINE" and drawn.GraphicAnnotationUnits == "PIXEL"
        points = list(zip(drawn.GraphicData[0::2], drawn.GraphicData[1::2]))
        assert points[0] == points[-1] and len(points) == len(view.region)
        assert "NOT FOR DIAGNOSTIC USE" in annotation.TextObjectSequence[0].UnformattedTextValue


def _check_ohif(orthanc_url: str, tmp_path: Path, originals: list[pydicom.Dataset], report: pydicom.Dataset) -> None:
    """OHIF's released viewer, on this Orthanc's DICOMweb, opens the study on its SR and draws the first region over
    its radiograph: most of the outline's points, projected where OHIF fits the image in its canvas, lie within a
    few pixels of the green it draws SR regions in (the radiograph itself is gray). The screenshot is kept."""

    from tests.browser import chromium
    from tests.ohif import open_report, running_ohif

    first = next(view for view in read_report(report)["views"] if view["region"])  # OHIF opens the first region
    image = next(o for o in originals if o.SOPInstanceUID == first["region"]["image"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = int(orthanc_url.rsplit(":", 1)[1])
    with running_ohif(tmp_path / "ohif", port) as viewer, chromium("--enable-unsafe-swiftshader") as browser:
        shown = open_report(browser, viewer, originals[0].StudyInstanceUID, report.SeriesInstanceUID,
                            ARTIFACTS / "ohif-region.png")  # fmt: skip
    pixels = shown["pixels"].astype(int)
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)
    x, y, width, height = shown["canvas"]
    scale = min(width / image.Columns, height / image.Rows)  # fitted, centred
    left, top = x + (width - image.Columns * scale) / 2, y + (height - image.Rows * scale) / 2
    near = 0
    for px, py in first["region"]["outline"]:
        column, row = round(left + px * scale), round(top + py * scale)
        near += bool(green[max(0, row - 8) : row + 9, max(0, column - 8) : column + 9].any())
    assert near >= 0.7 * len(first["region"]["outline"]), (near, len(first["region"]["outline"]))


def _validate(report: pydicom.Dataset, captures: list[pydicom.Dataset], folder: Path, pixelmed: bool) -> None:
    """dciodvfy on the SR and every other object (Secondary Captures, presentation states), and Pixelmed on the SR:
    TID 1500 and no error line."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, made in enumerate([report, *captures]):
        path = folder / f"{n}.dcm"
        made.save_as(path, enforce_file_format=True)
        assert errors(dciodvfy(path)) == [], dciodvfy(path)
    if pixelmed:
        found = pixelmed_sr(folder / "0.dcm")
        assert "Found Root Template TID_1500 (MeasurementReport)" in found and errors(found) == [], found


def _answers(url: str, study_uid: str, states: list | None = None) -> tuple[list, list]:
    """(secondary captures, SRs) Orthanc holds for a study; its presentation states are appended to ``states``."""
    captures, reports = [], []
    for series in study_series(url, study_uid):
        for orthanc_id in series["Instances"]:
            ds = pydicom.dcmread(io.BytesIO(instance_file(url, orthanc_id)))
            if ds.SOPClassUID == SC_CLASS:
                captures.append(ds)
            elif ds.SOPClassUID == SR_CLASS:
                reports.append(ds)
            elif ds.SOPClassUID == PR_CLASS and states is not None:
                states.append(ds)
    return captures, reports


@pytest.fixture(scope="module")
def studies(synthetic_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip-studies")
    plain = write_dicom_studies(synthetic_root, root / "plain", "valid", "explicit", seed=11, limit=3)
    jpeg = write_dicom_studies(synthetic_root, root / "j2k", "valid", "jpeg2000", seed=12, limit=1)
    full = write_dicom_studies(synthetic_root, root / "full", "valid", "explicit", seed=13, limit=1)[0]
    sparse = _sparse_study(full, root / "sparse")
    return {"plain": plain, "jpeg2000": jpeg, "ct": _ct_study(plain[0], root / "ct"), "sparse": sparse,
            "real": _real_study(root / "real")}  # fmt: skip


def test_orthanc_round_trip(studies, tmp_path):
    node_port, orthanc_port = free_port(), free_port()
    reference = Predictor.from_pretrained(REPO / "checkpoints/demo", precision="auto", runtime="auto")
    with orthanc(tmp_path / "orthanc", {"node": [NODE, "127.0.0.1", node_port]}, dicom_port=orthanc_port) as (url, _):
        node = start_node(tmp_path, node_port, f"ORTHANC@127.0.0.1:{orthanc_port}", 1.0, "node.log",
                           "--dicomweb", f"{url}/dicom-web")  # fmt: skip
        try:
            folders = [*studies["plain"], *studies["jpeg2000"], studies["ct"], studies["sparse"], studies["real"]]
            ids = upload(url, [f for folder in folders for f in sorted(folder.glob("*.dcm"))])
            assert route(url, "node", ids).status_code == 200
            analysed = [*studies["plain"], *studies["jpeg2000"], studies["sparse"], studies["real"]]
            # Pixelmed (a JVM, about 10 s a run) reads a study with every header and the sparse one
            validated = {studies["plain"][0], studies["sparse"]}
            regions, shown_in_ohif = {}, None
            for folder in analysed:
                files = sorted(folder.glob("*.dcm"))
                originals = [pydicom.dcmread(f) for f in files]
                study_uid = originals[0].StudyInstanceUID
                expected = reference.predict_study([load_radiograph(str(f)) for f in files], explain=True)
                regions[folder.name] = sum(view.region is not None for view in expected.views)
                states: list = []

                def answered():
                    states.clear()
                    captures, reports = _answers(url, study_uid, states)
                    done = reports and len(captures) == len(files) and len(states) == regions[folder.name]  # noqa: B023
                    return (captures, reports) if done else None

                captures, reports = wait_for(answered, 120, f"the answer to {folder.name}")
                assert len(reports) == 1 and len(captures) == len(files)  # one SC per view, one SR
                _check_sr(reports[0], expected, originals)
                _check_states(states, expected, originals)
                if shown_in_ohif is None and regions[folder.name]:
                    shown_in_ohif = (originals, reports[0])
                _validate(reports[0], [*captures, *states], tmp_path / "validated" / folder.name, folder in validated)
                for made in (*captures, *reports, *states):
                    assert made.StudyInstanceUID == study_uid and made.PatientName == originals[0].PatientName
                    assert made.PatientID == originals[0].PatientID
                    for keyword in ("AccessionNumber", "PatientBirthDate"):  # copied, or empty: never invented
                        assert keyword in made and (made[keyword].value or "") == (originals[0].get(keyword) or "")
                    assert (
                        made.SeriesDescription.startswith("mura-mt")
                        and "NOT FOR DIAGNOSTIC USE" in made.SeriesDescription
                    )
                    assert made.SeriesInstanceUID != originals[0].SeriesInstanceUID
                for capture in captures:
                    assert capture.BurnedInAnnotation == "YES" and capture.PhotometricInterpretation == "RGB"
                    assert "WindowCenter" not in capture and "RescaleSlope" not in capture
            _check_ohif(url, tmp_path, *shown_in_ohif)
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
                assert len(store.deliveries(uid)) == 2 * (len(list(folder.glob("*.dcm"))) + 1 + regions[folder.name])
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
            states: list = []
            captures, reports = _answers(url, study_uid, states)
            assert len(reports) == 1 and len(captures) == len(files)  # each object once
    finally:
        stop_node(node)
    deliveries = store.deliveries(study_uid)
    assert len(deliveries) == len(files) + 1 + len(states) and {d["state"] for d in deliveries} == {"delivered"}
    assert len({d["sop_uid"] for d in deliveries}) == len(deliveries)  # analysed once: one set of objects
    assert os.path.exists(tmp_path / "worklist.sqlite")
