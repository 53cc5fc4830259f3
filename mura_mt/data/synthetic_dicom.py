"""Synthetic studies as DICOM: the synthetic MURA tree's studies written as CR files with the tags a PACS sends.

For tests, benchmarks and a newcomer's walkthrough of the DICOM side: each MURA study becomes one DICOM study (one
series of CR images) with a patient (id, name, some with non-ASCII characters and their character set, sex, birth
date), an accession number, BodyPartExamined, ViewPosition and laterality. Pixels are stored as 12-bit values with a
window that covers them; every third study is MONOCHROME1 (stored inverted, as many CR systems send it). Transfer
syntaxes: explicit VR little endian (default), deflate, RLE lossless and JPEG 2000 lossless. UIDs are derived from
the seed and the study, so the same call writes the same files. ``studies.csv`` beside them maps each StudyInstanceUID
to its MURA study, body part and label. Test and demo data, not a claim about real radiographs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from mura_mt.labels import BODY_PART_TERMS

# Names from several scripts, so that a node that copies them can be checked to keep them intact.
PATIENT_NAMES = ("Müller^Jürgen", "Åström^Sofia", "García^José", "Nguyễn^Thị An", "Smith^John", "Dubois^Chloé")
VIEW_POSITIONS = ("PA", "LL", "AP", "RL")
TRANSFER_SYNTAXES = ("explicit", "deflate", "rle", "jpeg2000")
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as pydicom.uid.generate_uid uses it


def write_dicom_studies(
    mura_dir: str | Path,
    out: str | Path,
    split: str = "valid",
    transfer_syntax: str = "explicit",
    seed: int = 0,
    limit: int | None = None,
    long_side: int | None = None,
) -> list[Path]:
    """Write the studies of ``split`` of a (synthetic) MURA-v1.1 folder as DICOM under ``out``/<study folder>/;
    returns the study folders. ``limit`` writes only the first studies; ``long_side`` resizes each image to that
    many pixels on its longer side (a detector's size: real CRs are about 2,000 px, MURA's PNGs about 500)."""
    from mura_mt.data.index import read_mura_index

    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {TRANSFER_SYNTAXES}, got {transfer_syntax!r}")
    table = read_mura_index(mura_dir, split)
    out = Path(out)
    folders, rows = [], []
    for number, (study_id, views) in enumerate(table.groupby("study_id", sort=True)):
        if limit is not None and number >= limit:
            break
        first = views.iloc[0]
        folder = out / f"study{number:05d}"
        study = _study_tags(seed, number, str(study_id), str(first["patient_id"]), str(first["body_part"]))
        monochrome1 = number % 3 == 2
        folder.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(views["path"]):
            gray = Image.open(path).convert("L")
            if long_side:
                scale = long_side / max(gray.size)
                gray = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.Resampling.BICUBIC)
            dataset = _image(study, index, np.asarray(gray), monochrome1)
            _save(dataset, folder / f"IMG{index + 1:04d}.dcm", transfer_syntax)
        folders.append(folder)
        rows.append(
            [study["StudyInstanceUID"], study["AccessionNumber"], study["PatientID"], str(study_id),
             str(first["body_part"]), int(first["label"]), len(views), "MONOCHROME1" if monochrome1 else "MONOCHROME2",
             transfer_syntax, folder.name]
        )  # fmt: skip
    with open(out / "studies.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["study_uid", "accession", "patient_id", "mura_study", "body_part", "label", "views", "photometric",
             "transfer_syntax", "folder"]
        )  # fmt: skip
        writer.writerows(rows)
    return folders


def _uid(seed: int, *parts: object) -> str:
    """A UID derived from the seed and the parts (the same inputs give the same UID)."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=UID_ROOT, entropy_srcs=["mura-mt-synthetic", str(seed), *map(str, parts)])


def _study_tags(seed: int, number: int, study_id: str, patient: str, part: str) -> dict:
    rng = np.random.default_rng([seed, number])
    day = 1 + number % 28
    digits = "".join(c for c in patient if c.isdigit()) or "0"
    return {
        "StudyInstanceUID": _uid(seed, "study", study_id),
        "SeriesInstanceUID": _uid(seed, "series", study_id),
        "StudyID": f"{number + 1}",
        "AccessionNumber": f"SYN{seed:02d}{number:06d}",
        "PatientID": f"MURA{digits}",
        "PatientName": PATIENT_NAMES[int(digits) % len(PATIENT_NAMES)],
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "PatientBirthDate": f"19{int(rng.integers(40, 99)):02d}0{int(rng.integers(1, 10))}1{int(rng.integers(0, 10))}",
        "StudyDate": f"202611{day:02d}",
        "StudyTime": f"{8 + number % 10:02d}{number % 60:02d}00",
        "StudyDescription": f"XR {BODY_PART_TERMS[part]}",
        "BodyPartExamined": BODY_PART_TERMS[part],
        "Laterality": "L" if rng.random() < 0.5 else "R",
        "study_key": study_id,
        "seed": seed,
    }


def _image(study: dict, index: int, gray: np.ndarray, monochrome1: bool):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_uid = _uid(study["seed"], "image", study["study_key"], index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the names keep their accents
    ds.SOPClassUID, ds.SOPInstanceUID = CR_IMAGE_STORAGE, sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Modality = "CR"
    ds.Manufacturer = "mura-mt synthetic"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = "Référent^Dr"
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "StudyID", "AccessionNumber", "PatientID", "PatientName",
                "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime", "StudyDescription", "BodyPartExamined",
                "Laterality"):  # fmt: skip
        setattr(ds, key, study[key])
    ds.SeriesDate, ds.SeriesTime = study["StudyDate"], study["StudyTime"]
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.SeriesDescription = study["StudyDescription"]
    ds.ViewPosition = VIEW_POSITIONS[index % len(VIEW_POSITIONS)]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    stored = gray.astype(np.uint16) * 16 + 8  # 12-bit detector values
    if monochrome1:
        stored = 4095 - stored  # stored inverted: low values display white
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    low, high = (int(v) for v in np.percentile(stored, [0.5, 99.5]))
    ds.WindowCenter, ds.WindowWidth = (low + high) // 2, max(high - low, 1)
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def _save(ds, path: Path, transfer_syntax: str) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    if transfer_syntax == "rle":
        ds.compress(RLELossless)
    elif transfer_syntax == "jpeg2000":
        ds.compress(JPEG2000Lossless)  # needs pylibjpeg-openjpeg (a dependency)
    elif transfer_syntax == "deflate":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
