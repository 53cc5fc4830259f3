"""The site's labelled studies as a training tree: python scripts/export_site_data.py --db FILE_OR_URL --out DIR
[--split-off 0.3] [--key-file FILE] [--since ISO] [--until ISO] [--source reader|ris|import|any] [--seed S]

Writes DIR/images/<patient>/<study>/viewN.png (the radiographs as the model reads them, no metadata) and
DIR/train.csv (and DIR/test.csv with --split-off: that share of patients, none in both) in the CSV format
train.py reads with data.kind=csv: path, body_part, label, study_id, patient_id (and accession). Patient, study and
accession are keyed hashes (HMAC-SHA256; --key-file keeps the key so a later export gives the same ids); names,
dates and every DICOM header are left behind. Text burned into the pixels is NOT removed: check the images.

Fine-tune from the checkpoint the site runs:
  accelerate launch scripts/train.py --config configs/mura.yaml data.kind=csv data.root=DIR/train.csv \\
      data.test_csv=DIR/test.csv model.init_from=CKPT output_dir=runs/site
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from mura_mt.data.index import split_by_patient
from mura_mt.site.labels import LabelError
from mura_mt.site.export import export_labelled, site_key
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.site.window import parse_since

BURNED_IN = ("The pixels are exported as they are: text burned into the images (names, dates, accession numbers "
             "on the film) is NOT removed. Checking the images before they leave the site is the site's "
             "responsibility.")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the worklist store: a SQLite file or a postgresql:// URL")
    parser.add_argument("--out", required=True, help="the export folder (must be new or empty)")
    parser.add_argument("--split-off", type=float, default=0.0, help="share of patients written to test.csv")
    parser.add_argument("--key-file", default=None, help="the hashing key (hex); created there when missing")
    parser.add_argument("--since", default=None, help="studies received at or after (ISO 8601)")
    parser.add_argument("--until", default=None, help="studies received before (ISO 8601)")
    parser.add_argument("--source", default="any", choices=["reader", "ris", "import", "any"], help="labels from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty: export into a new folder")
    if not 0 <= args.split_off < 1:
        parser.error(f"--split-off must be in [0, 1); got {args.split_off}")
    try:
        key, key_source = site_key(args.key_file)
        store = WorklistStore(args.db, node="export")
        out.mkdir(parents=True, exist_ok=True)
        exported = export_labelled(store, out, key, parse_since(args.since), parse_since(args.until), args.source)
    except (ValueError, LabelError, ConnectionError, RuntimeError) as err:
        shutil.rmtree(out / "images", ignore_errors=True)
        parser.error(str(err))
    if not exported.rows:
        parser.error("no labelled study with a readable radiograph to export")
    table = pd.DataFrame(exported.rows)
    train, test = split_by_patient(table, args.split_off, args.seed) if args.split_off else (table, table.iloc[0:0])
    train.to_csv(out / "train.csv", index=False)
    written = [out / "train.csv"]
    if len(test):
        test.to_csv(out / "test.csv", index=False)
        written.append(out / "test.csv")
    summary = {
        "studies": int(table["study_id"].nunique()),
        "images": len(table),
        "patients": int(table["patient_id"].nunique()),
        "train_studies": int(train["study_id"].nunique()),
        "test_studies": int(test["study_id"].nunique()),
        "abnormal_studies": int(table.drop_duplicates("study_id")["label"].sum()),
        "parts": table.drop_duplicates("study_id")["body_part"].value_counts().sort_index().to_dict(),
        "skipped": exported.skipped,
    }
    print(f"exported {summary['images']} images of {summary['studies']} labelled studies ({summary['patients']} "
          f"patients; {summary['abnormal_studies']} abnormal studies): {summary['parts']}")  # fmt: skip
    print(f"ids: keyed hashes with {key_source}")
    for line in exported.skipped:
        print(f"left out: {line}")
    print(f"wrote {', '.join(str(p) for p in written)} and {out / 'images'}")
    print(f"NOTE: {BURNED_IN}")
    return summary


if __name__ == "__main__":
    main()
