"""The site's own evidence: python scripts/site_report.py --db FILE_OR_URL --out DIR [--since ISO] [--until ISO]
[--source reader|ris|import|any] [--resamples N] [--seed S]

Scores the node's answers against the labels that came back (the reader's reads, the RIS's reports, imported
files) with the same metrics and bootstrap as ``evaluate.py --report``, and writes DIR/metrics.json (overall and one
block per body part: study_kappa, study_auroc, sensitivity, specificity, accuracy, each with _ci95, n_studies and a
judgement: "too few to judge" below 20 labelled studies), DIR/study_predictions.csv, DIR/report.html and
DIR/report.md: label coverage, model-label agreement, ROC curves, reliability, and the studies where the model and
the label disagree with the node's Grad-CAM pictures. The window is by the studies' arrival (UTC unless it says).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mura_mt.site.labels import LabelError, SiteLabels
from mura_mt.dicom_node.outputs import sent_pictures
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.evaluation.bootstrap import DEFAULT_RESAMPLES
from mura_mt.evaluation.site import disagreements
from mura_mt.evaluation.site_report import SHOWN_DISAGREEMENTS, write_site_outputs
from mura_mt.site.window import iso, parse_since


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the worklist store: a SQLite file or a postgresql:// URL")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--since", default=None, help="studies received at or after (ISO 8601 or unix seconds)")
    parser.add_argument("--until", default=None, help="studies received before (ISO 8601 or unix seconds)")
    parser.add_argument("--source", default="any", choices=["reader", "ris", "import", "any"])
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    try:
        since, until = parse_since(args.since), parse_since(args.until)
        store = WorklistStore(args.db, node="site-report")
        metrics, studies = SiteLabels(store).evidence(since, until, args.source, args.resamples, args.seed)
    except (ValueError, LabelError, ConnectionError, RuntimeError) as err:
        parser.error(str(err))
    window = f"from {iso(since) if since else 'the start'} to {iso(until) if until else 'now'}"
    source = f"Worklist {store.db}, studies received {window}, labels from {args.source} source(s)."
    pictures = {uid: sent_pictures(store, uid) for uid in disagreements(studies)["study_id"][:SHOWN_DISAGREEMENTS]}
    written = write_site_outputs(Path(args.out), metrics, studies, source, pictures)
    overall = metrics["overall"]
    print(f"{metrics['coverage']['labelled']} labelled of {metrics['coverage']['answered']} answered studies; "
          f"overall kappa {overall['study_kappa']}, AUROC {overall['study_auroc']} ({overall['judgement']})")  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    if not len(studies):
        print("no labelled answers in this window: nothing to score yet", file=sys.stderr)
    return metrics


if __name__ == "__main__":
    main()
