"""The image index: MURA's header-less CSVs (or a plain CSV of one's own) -> one table, one row per image.

Owns parsing, validation and the patient-grouped split. It never decodes an image and never drops a row
silently: every inconsistency is an ``MuraIndexError`` naming the file, the count and the first offenders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mura_mt.labels import BODY_PARTS, parse_body_part

INDEX_COLUMNS = ["path", "body_part", "patient_id", "study_id", "label"]
_STUDY_RE = re.compile(
    r"^MURA-v1\.1/(?P<split>train|valid|test)/(?P<part>XR_[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+)(?:_(?P<suffix>positive|negative))?$"
)
_SHOW = 5


class MuraIndexError(ValueError):
    """The dataset's CSVs or folders are inconsistent; the message names the file and the rows."""


def find_mura_dir(root: str | Path) -> Path:
    """Return the ``MURA-v1.1`` folder given it or its parent."""
    root = Path(root).expanduser().resolve()
    for candidate in (root, root / "MURA-v1.1"):
        if candidate.name == "MURA-v1.1" and (candidate / "train_image_paths.csv").exists():
            return candidate
        if candidate.name == "MURA-v1.1" and (candidate / "valid_image_paths.csv").exists():
            return candidate
    raise MuraIndexError(f"no MURA-v1.1 folder with its CSVs at {root} (give the MURA-v1.1 folder or its parent)")


def read_mura_index(root: str | Path, split: str, check_files: bool = True) -> pd.DataFrame:
    """Read one official split into a table with columns path, body_part, patient_id, study_id, label.

    Args:
        root: the ``MURA-v1.1`` folder or the folder that contains it.
        split: ``"train"`` or ``"valid"``.
        check_files: verify that every listed image exists (one ``stat`` per image).
    """
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    mura_dir = find_mura_dir(root)
    base = mura_dir.parent  # CSV paths are relative to the folder that CONTAINS MURA-v1.1/
    image_csv = mura_dir / f"{split}_image_paths.csv"
    study_csv = mura_dir / f"{split}_labeled_studies.csv"
    images = _read_headerless(image_csv, n_columns=1, names=["rel_path"])
    studies = _read_headerless(study_csv, n_columns=2, names=["study_dir", "label"])

    studies["study_dir"] = studies["study_dir"].str.strip().str.rstrip("/")
    parsed = studies["study_dir"].str.extract(_STUDY_RE)
    _fail_on(studies["study_dir"][parsed["part"].isna()], study_csv, "rows are not MURA study paths")
    studies["label"] = pd.to_numeric(studies["label"], errors="coerce")
    _fail_on(studies["study_dir"][~studies["label"].isin([0, 1])], study_csv, "rows have a label other than 0 or 1")
    suffix_label = parsed["suffix"].map({"positive": 1, "negative": 0})
    disagree = suffix_label.notna() & (suffix_label != studies["label"])
    _fail_on(studies["study_dir"][disagree], study_csv, "rows have a label that disagrees with the folder name")
    dupes = studies["study_dir"][studies["study_dir"].duplicated()]
    _fail_on(dupes, study_csv, "studies are listed twice")
    try:
        studies["body_part"] = parsed["part"].map(parse_body_part)
    except ValueError as err:
        raise MuraIndexError(f"{study_csv}: {err}") from None
    studies["patient_id"] = parsed["patient"]

    images["rel_path"] = images["rel_path"].str.strip()
    images["study_dir"] = images["rel_path"].str.rsplit("/", n=1).str[0]
    table = images.merge(studies, on="study_dir", how="left", validate="many_to_one")
    _fail_on(table["rel_path"][table["label"].isna()], image_csv, f"images belong to no study in {study_csv.name}")
    without_images = sorted(set(studies["study_dir"]) - set(images["study_dir"]))
    _fail_on(pd.Series(without_images, dtype=object), study_csv, f"studies have no image in {image_csv.name}")

    table = pd.DataFrame(
        {
            "path": [str(base / rel) for rel in table["rel_path"]],
            "body_part": table["body_part"].astype(str),
            "patient_id": table["patient_id"].astype(str),
            "study_id": table["study_dir"].astype(str),
            "label": table["label"].astype(int),
        }
    )
    if check_files:
        check_files_exist(table, source=image_csv)
    return table


def read_csv_index(csv_path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read a plain CSV of one's own radiographs (header: path, body_part, label, study_id, patient_id).

    Relative paths are resolved against the CSV's folder. Validated like the MURA reader.
    """
    csv_path = Path(csv_path).expanduser().resolve()
    try:
        table = pd.read_csv(csv_path, dtype={"path": str, "study_id": str, "patient_id": str, "body_part": str})
    except FileNotFoundError:
        raise MuraIndexError(f"CSV not found: {csv_path}") from None
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise MuraIndexError(f"{csv_path}: missing column(s) {missing}; needs {INDEX_COLUMNS}")
    empty = table[INDEX_COLUMNS].isna().any(axis=1)
    _fail_on(table["path"][empty].fillna("<empty>"), csv_path, "rows have an empty field")
    table["label"] = pd.to_numeric(table["label"], errors="coerce")
    _fail_on(table["path"][~table["label"].isin([0, 1])], csv_path, "rows have a label other than 0 or 1")
    try:
        table["body_part"] = table["body_part"].map(parse_body_part)
    except ValueError as err:
        raise MuraIndexError(f"{csv_path}: {err}") from None
    mixed = table.groupby("study_id")[["label", "body_part"]].nunique().max(axis=1) > 1
    _fail_on(pd.Series(mixed.index[mixed]), csv_path, "studies mix labels or body parts")
    table["path"] = [str(p if Path(p).is_absolute() else csv_path.parent / p) for p in table["path"]]
    table = table[INDEX_COLUMNS].astype({"label": int}).reset_index(drop=True)
    if check_files:
        check_files_exist(table, source=csv_path)
    return table


def check_files_exist(table: pd.DataFrame, source: str | Path) -> None:
    """Raise if any listed image is missing on disk, with the count and the first few paths."""
    missing = table["path"][[not Path(p).is_file() for p in table["path"]]]
    _fail_on(missing, source, "listed images do not exist on disk")


def split_by_patient(table: pd.DataFrame, val_fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train and val so that no patient is in both, with about ``val_fraction`` of each body part.

    Patients are grouped by their id alone (MURA's ids are global across body parts). Patients are taken in
    a seeded random order and each goes to val while its body parts still need val studies; this keeps every
    body part near the requested fraction as far as the grouping allows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    studies = table.drop_duplicates("study_id")
    need = (studies["body_part"].value_counts() * val_fraction).round().to_dict()
    per_patient = studies.groupby("patient_id")["body_part"].value_counts().unstack(fill_value=0)
    order = np.random.default_rng(seed).permutation(per_patient.index.to_numpy())
    taken = dict.fromkeys(BODY_PARTS, 0)
    val_patients = set()
    for patient in order:
        counts = per_patient.loc[patient]
        parts = counts[counts > 0]
        if all(taken.get(part, 0) + n <= need.get(part, 0) + 0.5 for part, n in parts.items()):
            val_patients.add(patient)
            for part, n in parts.items():
                taken[part] += n
    in_val = table["patient_id"].isin(val_patients)
    return table[~in_val].reset_index(drop=True), table[in_val].reset_index(drop=True)


def _read_headerless(path: Path, n_columns: int, names: list[str]) -> pd.DataFrame:
    """Read an official MURA CSV, which has NO header row; accept copies that added one."""
    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except FileNotFoundError:
        raise MuraIndexError(f"CSV not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise MuraIndexError(f"{path} is empty") from None
    if frame.shape[1] != n_columns:
        raise MuraIndexError(f"{path}: expected {n_columns} column(s), found {frame.shape[1]}")
    if not str(frame.iat[0, 0]).strip().startswith("MURA-v1.1/"):  # a home-made header line
        frame = frame.iloc[1:]
    frame.columns = names
    return frame.reset_index(drop=True)


def _fail_on(offenders: pd.Series, source: str | Path, what: str) -> None:
    if len(offenders):
        first = ", ".join(str(x) for x in list(offenders)[:_SHOW])
        raise MuraIndexError(f"{source}: {len(offenders)} {what} (first: {first})")
