"""Fit the site's own thresholds: python scripts/calibrate_site.py --checkpoint CKPT (--db FILE_OR_URL | --eval DIR)
--out NEW_CKPT [--sensitivity 0.98] [--ppv 0.90] [--confidence 0.95] [--split-off 0.3] [--since ISO] [--until ISO]
[--source reader|ris|import|any] [--seed S]

Refits the calibration, the per-part thresholds and the operating points (rule-out and rule-in with a guarantee) on
the site's labelled studies: the worklist store's answers with the labels that came back (--db), or an evaluate.py
folder of the site's own data (--eval). The weights are unchanged; NEW_CKPT is a complete checkpoint folder the app
and the node serve at once, whose config.json and model card (README.md) say where its thresholds came from.
--split-off of the patients are kept aside: both checkpoints are scored on them and compared as compare.py does
(NEW_CKPT/site_calibration/before, after and compare; with --eval also heldout_images.csv, the held-out images as an
index for evaluate.py --csv, to compare any other checkpoint on the same patients). Use --split-off 0 to fit on
everything once you trust it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mura_mt.data.index import INDEX_COLUMNS
from mura_mt.evaluation.compare import ComparisonError, compare, load_evaluation, plain_reading
from mura_mt.evaluation.compare_report import write_comparison
from mura_mt.evaluation.model_card import build_model_card
from mura_mt.inference.calibration import Calibration
from mura_mt.inference.checkpoint import CheckpointError, checkpoint_config
from mura_mt.inference.operating_points import OperatingPoints, rule_out_needs, still_needed
from mura_mt.training.site_calibration import (
    SiteCalibrationError,
    heldout_metrics,
    labels_fingerprint,
    provenance,
    refit,
    split_views,
    study_predictions,
    views_from_answers,
    views_from_evaluation,
    write_site_checkpoint,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the site runs now (folder)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="the worklist store (SQLite file or postgresql:// URL) with labelled answers")
    source.add_argument("--eval", help="an evaluate.py output folder of the site's own labelled data")
    parser.add_argument("--out", required=True, help="the new checkpoint folder")
    parser.add_argument("--sensitivity", type=float, default=0.98, help="rule-out: sensitivity kept above it")
    parser.add_argument("--ppv", type=float, default=0.90, help="rule-in: positive predictive value above it")
    parser.add_argument("--confidence", type=float, default=0.95, help="the probability the guarantees hold")
    parser.add_argument("--split-off", type=float, default=0.3, help="share of patients held out to compare on")
    parser.add_argument("--since", default=None, help="--db: studies received at or after (ISO 8601)")
    parser.add_argument("--until", default=None, help="--db: studies received before (ISO 8601)")
    parser.add_argument("--source", default="any", choices=["reader", "ris", "import", "any"], help="--db: labels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split and the bootstrap")
    args = parser.parse_args(argv)
    if not 0 <= args.split_off < 1:
        parser.error(f"--split-off must be in [0, 1); got {args.split_off}")
    try:
        old_config = checkpoint_config(args.checkpoint)
        old = Calibration.from_dict(old_config["calibration"])
        views, site, window = _views(args, old)
        fit, heldout = split_views(views, args.split_off, args.seed)
        calibration, points, site_wide, refitted = refit(fit, old, args.sensitivity, args.ppv, args.confidence)
    except (ValueError, KeyError, CheckpointError, SiteCalibrationError, ConnectionError, RuntimeError) as err:
        parser.error(str(err))
    record = provenance(site, window, fit, heldout, old_config, refitted, args.seed, args.split_off)
    operating_points = {
        "method": "Learn-then-Test (mura_mt.inference.operating_points), fitted on the site's labelled studies by "
        "the model's body part",
        "split_sha256": labels_fingerprint(fit),
        "parts": points,
        "site": site_wide,
    }
    comparison = None
    if len(heldout):
        before, after = study_predictions(heldout, old), study_predictions(heldout, calibration)
        record["heldout"] = {"before": heldout_metrics(before), "after": heldout_metrics(after)}
    out = write_site_checkpoint(args.checkpoint, args.out, calibration, operating_points, record)
    config = checkpoint_config(out)
    build_model_card(config, out.name).save(out / "README.md")
    if len(heldout):
        comparison = _compare(out / "site_calibration", before, after, args, record)
        if args.eval:  # the held-out images as an index, to evaluate any other checkpoint on the same patients
            images = pd.read_csv(Path(args.eval) / "image_logits.csv", dtype={"study_id": str, "patient_id": str})
            held = images[images["study_id"].isin(set(heldout["study_id"]))]
            held[list(INDEX_COLUMNS)].to_csv(out / "site_calibration" / "heldout_images.csv", index=False)
    _summary(out, record, operating_points, comparison)
    return {"checkpoint": str(out), "site_calibration": record, "operating_points": points, "site_wide": site_wide,
            "compare": comparison}  # fmt: skip


def _views(args, old: Calibration):
    """(views, where they came from, the window) from the store or an evaluate.py folder."""
    if args.eval:
        return views_from_evaluation(args.eval), f"evaluate.py folder {args.eval}", {}
    from mura_mt.site.labels import SiteLabels
    from mura_mt.dicom_node.store import WorklistStore
    from mura_mt.site.window import iso, parse_since

    since, until = parse_since(args.since), parse_since(args.until)
    store = WorklistStore(args.db, node="calibrate-site")
    rows = SiteLabels(store).labelled_answers(since, until, args.source)
    window = {"since": iso(since) if since else None, "until": iso(until) if until else None, "source": args.source}
    return views_from_answers(rows, old), f"worklist {store.db}", window


def _compare(folder: Path, before, after, args, record: dict) -> dict | None:
    """Both checkpoints' held-out answers as evaluate.py folders, compared as compare.py compares them."""
    for name, studies, checkpoint in (("before", before, args.checkpoint), ("after", after, args.out)):
        side = folder / name
        side.mkdir(parents=True, exist_ok=True)
        studies.to_csv(side / "study_predictions.csv", index=False)
        source = {"checkpoint": str(checkpoint), "data": "the site's held-out patients",
                  "n_studies": int(len(studies)), "split_sha256": record["labels_sha256_heldout"]}  # fmt: skip
        (side / "metrics.json").write_text(json.dumps({"source": source}, indent=2))
    try:
        result = compare(load_evaluation(folder / "before"), load_evaluation(folder / "after"), seed=args.seed)
    except ComparisonError as err:
        print(f"compare: {err}")
        return None
    write_comparison(folder / "compare", result)
    return result


def _summary(out: Path, record: dict, operating_points: dict, comparison: dict | None) -> None:
    print(f"fitted on {record['n_studies_fit']} studies of {record['site']}; held out {record['n_studies_heldout']}")
    print(f"calibration refitted for: {', '.join(record['calibration_refitted_parts']) or 'no part (too few studies)'}")
    served = OperatingPoints.from_config(operating_points)
    site = operating_points["site"]
    needs = rule_out_needs(site["sensitivity"], site["confidence"])
    print(f"operating points (a rule-out at sensitivity {site['sensitivity']} with confidence {site['confidence']} "
          f"needs {needs} labelled abnormal studies; a part without one uses the site-wide point):")  # fmt: skip
    for part, fitted in [*operating_points["parts"].items(), ("site-wide", site)]:
        rule_out = "-" if fitted["rule_out"] is None else f"{fitted['rule_out']:.4f}"
        rule_in = "-" if fitted["rule_in"] is None else f"{fitted['rule_in']:.3f}"
        more = still_needed(fitted["n_abnormal"], fitted["sensitivity"], fitted["confidence"])
        uses = "" if part == "site-wide" else f"  likely normal by: {served.basis(part, 'likely normal') or 'none'}"
        print(f"  {part:9s} {fitted['n_studies']:5d} studies ({fitted['n_abnormal']} abnormal)  rule-out {rule_out}  "
              f"rule-in {rule_in}  {'enough' if not more else f'{more} more abnormal needed'}{uses}")  # fmt: skip
    if comparison is not None:
        print(f"held out, old -> new: {plain_reading(comparison)}")
        print(f"  (the same as: python scripts/compare.py {out}/site_calibration/before {out}/site_calibration/after "
              f"--out DIR)")  # fmt: skip
    print(f"wrote {out} (weights unchanged; serve it with app.py --checkpoint {out} or the node's --checkpoint)")


if __name__ == "__main__":
    main()
