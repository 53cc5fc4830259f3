"""Evaluate a checkpoint: python scripts/evaluate.py --checkpoint CKPT --data-root ROOT [--split valid] --out DIR.

Writes DIR/metrics.json (both gates, per part and overall) and DIR/study_predictions.csv (predicted gate),
and prints a table. --csv evaluates your own radiographs listed in a CSV instead of a MURA split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mura_mt.data import read_csv_index, read_mura_index
from mura_mt.evaluation import evaluate_checkpoint
from mura_mt.metrics import format_table
from mura_mt.predictor import Predictor


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="MURA-v1.1 folder or its parent")
    source.add_argument("--csv", help="a CSV with path, body_part, label, study_id, patient_id")
    parser.add_argument("--split", default="valid", choices=["train", "valid"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    table = read_csv_index(args.csv) if args.csv else read_mura_index(args.data_root, args.split)
    predictor = Predictor.from_pretrained(args.checkpoint, device=args.device)
    metrics, studies = evaluate_checkpoint(predictor, table, args.batch_size)
    metrics["source"] = {
        "checkpoint": str(args.checkpoint),
        "data": args.csv or f"{args.data_root}:{args.split}",
        "n_images": len(table),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    studies.to_csv(out / "study_predictions.csv", index=False)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'study_predictions.csv'}")
    return metrics


if __name__ == "__main__":
    main()
