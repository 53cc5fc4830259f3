"""Write a checkpoint's drift reference: python scripts/drift_reference.py --checkpoint DIR (--data-root ROOT
[--split valid] | --csv FILE)

Runs the checkpoint over the studies of a validation split as the node would (the Predictor: calibrated, gated
study probabilities and the "unlike the training images" warning) and writes DIR/drift_reference.json, which the
drift monitor compares the site's answers with (mura_mt.evaluation.drift). Training writes it at export from its
own val split; this script gives one to an older checkpoint.
"""

from __future__ import annotations

import argparse

from mura_mt.data import read_csv_index, read_mura_index
from mura_mt.evaluation.drift import reference_from_predictor, write_reference
from mura_mt.inference.predictor import Predictor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder (written into)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="MURA-v1.1 folder or its parent")
    source.add_argument("--csv", help="a CSV with path, body_part, label, study_id, patient_id")
    parser.add_argument("--split", default="valid", choices=["train", "valid"])
    args = parser.parse_args(argv)
    table = read_csv_index(args.csv) if args.csv else read_mura_index(args.data_root, args.split)
    fp32 = Predictor.from_pretrained(args.checkpoint, precision="fp32", runtime="torch")
    reference = reference_from_predictor(fp32, table)
    reference["source"] += f" ({args.csv or args.split + ' split'})"
    path = write_reference(args.checkpoint, reference)
    print(f"wrote {path}: {reference['studies']} studies, warning rate {reference['warning_rate']:.3f}")


if __name__ == "__main__":
    main()
