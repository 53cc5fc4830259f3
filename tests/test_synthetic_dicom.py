"""Synthetic studies as DICOM: realistic tags, names intact, MONOCHROME1 and 2, four transfer syntaxes, and pixels
the project's own loader decodes back to the radiograph they were made from."""

import csv

import numpy as np
import pydicom
import pytest
from PIL import Image

from mura_mt.data import read_mura_index
from mura_mt.data.synthetic_dicom import PATIENT_NAMES, TRANSFER_SYNTAXES, write_dicom_studies
from mura_mt.imaging.io import load_radiograph


@pytest.fixture(scope="module")
def explicit(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    return out, write_dicom_studies(synthetic_root, out, "valid", "explicit", seed=3, limit=6)


def test_tags_a_pacs_would_send(explicit, synthetic_root):
    out, folders = explicit
    rows = list(csv.DictReader(open(out / "studies.csv", encoding="utf-8")))
    table = read_mura_index(synthetic_root, "valid")
    assert len(folders) == len(rows) == 6
    for folder, row in zip(folders, rows):
        files = sorted(folder.glob("*.dcm"))
        views = table[table["study_id"] == sorted(table["study_id"].unique())[folders.index(folder)]]
        assert len(files) == int(row["views"]) == len(views)
        datasets = [pydicom.dcmread(f) for f in files]
        assert {d.StudyInstanceUID for d in datasets} == {row["study_uid"]}
        assert (
            len({d.SOPInstanceUID for d in datasets}) == len(files)
            and len({d.SeriesInstanceUID for d in datasets}) == 1
        )
        first = datasets[0]
        assert first.Modality == "CR" and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
        assert first.BodyPartExamined == row["body_part"].upper() and first.AccessionNumber == row["accession"]
        assert first.PatientID == row["patient_id"] and str(first.PatientName) in PATIENT_NAMES
        assert first.SpecificCharacterSet == "ISO_IR 192" and first.PhotometricInterpretation == row["photometric"]
        assert [d.ViewPosition for d in datasets] == ["PA", "LL", "AP", "RL"][
            : len(datasets)
        ] and first.BitsStored == 12
    assert {r["photometric"] for r in rows} == {"MONOCHROME1", "MONOCHROME2"}
    names = {str(pydicom.dcmread(next(f.glob("*.dcm"))).PatientName) for f in folders}
    assert any(any(ord(c) > 127 for c in name) for name in names)  # non-ASCII names survive the round trip


def test_the_loader_gives_back_the_radiograph_in_both_photometrics(explicit, synthetic_root):
    out, folders = explicit
    table = read_mura_index(synthetic_root, "valid")
    studies = sorted(table["study_id"].unique())  # the writer numbers studies in this order
    for number, folder in enumerate(folders):
        pngs = table[table["study_id"] == studies[number]]["path"].tolist()
        for dcm, png in zip(sorted(folder.glob("*.dcm")), pngs):
            decoded = np.asarray(load_radiograph(str(dcm)), dtype=np.float64)
            source = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
            # Bone bright in both photometrics (MONOCHROME1 is stored inverted), same picture up to the window.
            assert np.corrcoef(decoded.ravel(), source.ravel())[0, 1] > 0.99, (dcm, png)


@pytest.mark.parametrize("syntax", [s for s in TRANSFER_SYNTAXES if s != "explicit"])
def test_compressed_syntaxes_decode_like_the_uncompressed_file(explicit, synthetic_root, tmp_path, syntax):
    out, _ = explicit
    folders = write_dicom_studies(synthetic_root, tmp_path, "valid", syntax, seed=3, limit=1)
    for compressed in sorted(folders[0].glob("*.dcm")):
        plain = out / folders[0].name / compressed.name
        assert (
            pydicom.dcmread(compressed).file_meta.TransferSyntaxUID
            != pydicom.dcmread(plain).file_meta.TransferSyntaxUID
        )
        assert np.array_equal(np.asarray(load_radiograph(str(compressed))), np.asarray(load_radiograph(str(plain))))


def test_same_seed_same_files_other_seed_other_uids(explicit, synthetic_root, tmp_path):
    out, folders = explicit
    again = write_dicom_studies(synthetic_root, tmp_path / "again", "valid", "explicit", seed=3, limit=1)
    other = write_dicom_studies(synthetic_root, tmp_path / "other", "valid", "explicit", seed=4, limit=1)
    first = sorted(folders[0].glob("*.dcm"))[0]
    assert (again[0] / first.name).read_bytes() == first.read_bytes()
    assert pydicom.dcmread(other[0] / first.name).StudyInstanceUID != pydicom.dcmread(first).StudyInstanceUID
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_dicom_studies(synthetic_root, tmp_path / "x", "valid", "jpeg-xl")


def test_the_generator_script_writes_dicom_on_request(tmp_path, capsys):
    from scripts import make_synthetic_mura

    make_synthetic_mura.main(
        ["--out", str(tmp_path), "--studies-per-part", "1", "--valid-studies-per-part", "1", "--dicom",
         "--dicom-studies", "2", "--transfer-syntax", "rle", "--workers", "1"]
    )  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "dicom" / "studies.csv", encoding="utf-8")))
    assert len(rows) == 2 and {r["transfer_syntax"] for r in rows} == {"rle"}
    assert "wrote 2 DICOM studies (rle)" in capsys.readouterr().out
