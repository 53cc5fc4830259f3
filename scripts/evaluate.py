"""Evaluate a checkpoint: python scripts/evaluate.py --checkpoint CKPT --data-root ROOT [--split valid] --out DIR
[--report].

Writes DIR/metrics.json (both gates, per part and overall), DIR/study_predictions.csv (predicted gate),
DIR/image_logits.csv (every image's raw logits: what calibrate_site.py --eval refits on),
and prints a table. --csv evaluates your own radiographs listed in a CSV instead of a MURA split.
--report adds bootstrap 95% intervals (<metric>_ci95, resampling studies) to metrics.json and writes
DIR/report.html (self-contained) and DIR/report.md with its PNGs in DIR/report_files/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mura_mt.data import read_csv_index, read_mura_index
from mura_mt.evaluation.bootstrap import DEFAULT_RESAMPLES, add_confidence_intervals
from mura_mt.evaluation.evaluate import (
    evaluate_checkpoint,
    image_logits,
    part_probabilities,
    predict_table,
    split_fingerprint,
)
from mura_mt.evaluation.metrics import format_table
from mura_mt.inference.checkpoint import checkpoint_config
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import RUNTIMES


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
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 where native")
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: env MURA_MT_RUNTIME, else auto")
    parser.add_argument("--report", action="store_true", help="confidence intervals, report.html and report.md")
    parser.add_argument("--report-name", default="report", help="file name of the report (without extension)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (>= 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)

    table = read_csv_index(args.csv) if args.csv else read_mura_index(args.data_root, args.split)
    predictor = Predictor.from_pretrained(
        args.checkpoint, device=args.device, precision=args.precision, runtime=args.runtime
    )
    part_logits, anomaly_logits = predict_table(predictor, table, args.batch_size)
    metrics, studies = evaluate_checkpoint(predictor, table, logits=(part_logits, anomaly_logits))
    part_probs = part_probabilities(part_logits)
    if args.report:
        add_confidence_intervals(
            metrics, table, part_probs, anomaly_logits, predictor.calibration, args.resamples, args.seed
        )
    metrics["source"] = {
        "checkpoint": str(args.checkpoint),
        "data": args.csv or f"{args.data_root}:{args.split}",
        "n_images": len(table),
        "n_studies": int(table["study_id"].nunique()),
        "split_sha256": split_fingerprint(table),
        "weights_sha256": checkpoint_config(args.checkpoint).get("weights_sha256"),
        "runtime": predictor.runtime,
        "precision": predictor.precision,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    studies.to_csv(out / "study_predictions.csv", index=False)
    image_logits(table, part_logits, anomaly_logits).to_csv(out / "image_logits.csv", index=False)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'}, {out / 'study_predictions.csv'} and {out / 'image_logits.csv'}")
    if args.report:
        from mura_mt.evaluation.report import write_report

        source = (
            f"Checkpoint {args.checkpoint} on {metrics['source']['data']} "
            f"({len(table)} images, {table['study_id'].nunique()} studies), "
            f"runtime {predictor.runtime}, precision {predictor.precision}."
        )
        html_file, md_file = write_report(
            out, args.report_name, metrics, table, part_probs, anomaly_logits, predictor, source
        )
        print(f"wrote {html_file} and {md_file}")
    return metrics


if __name__ == "__main__":
    main()
