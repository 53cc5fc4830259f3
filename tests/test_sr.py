"""The node's answer as a TID 1500 Measurement Report, without a network: built from real DICOM files (full and
sparse headers), read back with highdicom alone, checked by dciodvfy. The round trip through Orthanc, with Pixelmed,
is in test_dicom_roundtrip.py."""

import dataclasses

import pydicom
import pytest

from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.outputs import ModelIdentity, secondary_captures
from mura_mt.dicom_node.sr import read_report, structured_report
from mura_mt.imaging.io import load_radiograph
from mura_mt.inference.operating_points import OperatingPoints
from mura_mt.inference.predictor import Predictor
from mura_mt.labels import BODY_PARTS
from tests.conftest import REPO
from tests.validators import dciodvfy, errors, pixelmed_sr

ABSENT = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Laterality",
          "ImagerPixelSpacing", "PatientOrientation", "ViewPosition", "BodyPartExamined")  # fmt: skip


@pytest.fixture(scope="module")
def answered(synthetic_root, tmp_path_factory):
    """(views with sparse headers, the Predictor's answer, the SCs and the SR the node makes of them)."""
    folder = write_dicom_studies(synthetic_root, tmp_path_factory.mktemp("sr"), "valid", seed=21, limit=1)[0]
    files = sorted(folder.glob("*.dcm"))
    views = [pydicom.dcmread(f) for f in files]
    for view in views:
        for keyword in ABSENT:
            if keyword in view:
                delattr(view, keyword)
    grays = [load_radiograph(f) for f in files]
    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    # Operating points that put this study's probability between them, and each view's where it falls.
    probe = predictor.predict_study(grays)
    fitted = {"rule_out": probe.abnormal_prob - 1e-6, "rule_in": probe.abnormal_prob + 1e-6, "sensitivity": 0.9,
              "ppv": 0.9, "confidence": 0.9, "n_studies": 40}  # fmt: skip
    points = OperatingPoints({part: fitted for part in BODY_PARTS})
    predictor.serving = dataclasses.replace(predictor.serving, operating_points=points)
    result = predictor.predict_study(grays, explain=True)
    assert result.triage == "uncertain"
    warnings = [*result.warnings, "The images are labelled hand (BodyPartExamined), but the model sees a wrist"]
    model = ModelIdentity.of(REPO / "checkpoints/demo", "MURAMT")
    captures = secondary_captures(views, grays, result, warnings, model)
    return views, result, warnings, captures, structured_report(views, result, warnings, model)


def test_a_sparse_header_is_answered_with_empty_type2_attributes_never_invented(answered):
    views, _, _, captures, report = answered
    for made in (*captures, report):
        for keyword in ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
            assert keyword in made and made[keyword].is_empty
        assert made.PatientID == views[0].PatientID and made.StudyInstanceUID == views[0].StudyInstanceUID
    assert all(capture["Laterality"].is_empty for capture in captures)  # unknown, so empty (Type 2C)


def test_the_report_reads_back_with_highdicom_as_the_predictor_answered(answered, tmp_path):
    views, result, warnings, _, report = answered
    path = tmp_path / "sr.dcm"
    report.save_as(path, enforce_file_format=True)
    answer = read_report(path)
    assert answer["abnormal_prob"] == pytest.approx(result.abnormal_prob, abs=1e-9)
    assert answer["threshold"] == pytest.approx(result.threshold, abs=1e-9)
    assert answer["verdict"] == ("abnormal" if result.is_abnormal else "normal")
    assert answer["body_part"] == result.body_part and answer["warnings"] == warnings
    assert answer["weights_sha256"] == ModelIdentity.of(REPO / "checkpoints/demo", "MURAMT").weights_sha256
    assert answer["images"] == [v.SOPInstanceUID for v in views]
    assert [v["images"] for v in answer["views"]] == [[v.SOPInstanceUID] for v in views]
    assert [v["abnormal_prob"] for v in answer["views"]] == pytest.approx([v.abnormal_prob for v in result.views])
    assert {v["body_part"] for v in answer["views"]} == {result.body_part}
    assert answer["triage"] == result.triage and [v["triage"] for v in answer["views"]] == [
        v.triage for v in result.views
    ]
    def items(node):
        for item in node.get("ContentSequence", []):
            yield item
            yield from items(item)

    said = [item.TextValue for item in items(report) if item.ConceptNameCodeSequence[0].CodeValue == "TRIAGEBASIS"]
    assert said == [f"{v.triage} by the {v.triage_basis} operating point" for v in result.views if v.triage_basis]
    assert said  # the views fall on either side of the study's probability: some are "likely ..."
    library = [item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert len(library) == 1  # the Image Library references every analysed view, spacing or not


def test_the_device_uid_changes_with_the_weights_and_only_then():
    first = ModelIdentity("mura-mt resnet18 (demo)", "a" * 64, "MURAMT")
    assert first.device_uid == ModelIdentity("mura-mt resnet18 (demo)", "a" * 64, "MURAMT").device_uid
    assert first.device_uid != ModelIdentity("mura-mt resnet18 (demo)", "b" * 64, "MURAMT").device_uid
    assert pydicom.uid.UID(first.device_uid).is_valid


def test_dciodvfy_and_pixelmed_find_no_error_in_the_sr_or_the_secondary_captures(answered, tmp_path):
    """With the triage group (a private code) in every group: the round trip through Orthanc checks the rest."""
    _, _, _, captures, report = answered
    for n, made in enumerate([report, *captures]):
        path = tmp_path / f"{n}.dcm"
        made.save_as(path, enforce_file_format=True)
        found = dciodvfy(path)
        assert errors(found) == [], found
    found = pixelmed_sr(tmp_path / "0.dcm")
    assert errors(found) == [] and "Found Root Template TID_1500" in found, found
