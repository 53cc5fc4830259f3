"""The site's labelled studies as training data: PNG pixels and a table, nothing else of the DICOM files.

Each labelled answered study's radiograph views (the node's own copies, decoded by ``imaging.io`` as the model
reads them) become 8-bit PNGs written without metadata; the patient, the study and the accession become keyed
hashes (HMAC-SHA256 with the site's key, so the same key gives the same ids and no key gives nothing back). Names,
dates, UIDs and every other header field stay behind. Text burned into the pixels is not seen here: checking the
pixels is the site's responsibility (the export command says so). The body part is the reader's correction where
there is one, else the model's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.studies import is_radiograph
from mura_mt.imaging.io import InvalidImageError, load_radiograph

KEY_BYTES = 32


def site_key(key_file: str | Path | None) -> tuple[bytes, str]:
    """(the hashing key, how it was found): read from ``key_file``, created there (owner-only) when missing, or a
    fresh key kept nowhere when no file is named."""
    if key_file is None:
        return secrets.token_bytes(KEY_BYTES), "a fresh random key, kept nowhere (another export gives other ids)"
    path = Path(key_file)
    if path.is_file():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 16:
            raise ValueError(f"{path} holds a key of {len(key)} bytes; it needs at least 16 (hex)")
        return key, f"the key in {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(descriptor, "w") as f:
        f.write(key.hex())
    return key, f"a new key, written to {path} (keep it to get the same ids next time; it is not part of the export)"


def keyed(key: bytes, kind: str, value: str) -> str:
    """A keyed hash of one identifier, 16 hex digits (64 bits: no collision in any site's lifetime of studies)."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:16]


@dataclass
class Exported:
    rows: list[dict]  # path (relative to the export folder), body_part, label, study_id, patient_id, accession
    skipped: list[str]  # why a study or view was left out, one line each (no identifiers)


def export_labelled(store: WorklistStore, out: Path, key: bytes, since=None, until=None,
                    source: str = "any") -> Exported:  # fmt: skip
    """Write every labelled answered study's radiographs under ``out/images`` and return the table rows."""
    exported = Exported([], [])
    for row in SiteLabels(store).labelled_answers(since, until, source):
        patient = keyed(key, "patient", row["patient_id"] or row["study_uid"])
        study = keyed(key, "study", row["study_uid"])
        accession = keyed(key, "accession", row["accession"]) if row["accession"] else ""
        part = row["label_body_part"] or row["body_part"]
        views = _radiograph_files(store, row["study_uid"])
        if not views:
            exported.skipped.append(f"study {study}: none of its radiographs is readable on this machine")
            continue
        folder = out / "images" / patient / study
        folder.mkdir(parents=True, exist_ok=True)
        for number, path in enumerate(views, start=1):
            try:
                gray = load_radiograph(path)
            except InvalidImageError as err:
                exported.skipped.append(f"study {study} view {number}: {err}")
                continue
            target = folder / f"view{number}.png"
            gray.save(target, format="PNG")  # PIL writes no text chunks unless it is given some
            exported.rows.append({"path": str(target.relative_to(out)), "body_part": part, "label": int(row["label"]),
                                  "study_id": study, "patient_id": patient, "accession": accession})  # fmt: skip
    return exported


def _radiograph_files(store: WorklistStore, study_uid: str) -> list[str]:
    """One readable copy of each radiograph instance of the study, in arrival order."""
    chosen: dict[str, str] = {}
    for copy in store.copies(study_uid):
        if is_radiograph(copy) and copy["sop_uid"] not in chosen and Path(copy["path"]).is_file():
            chosen[copy["sop_uid"]] = copy["path"]
    return list(chosen.values())
