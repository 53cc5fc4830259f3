"""Bring labels from a file into the worklist store: python scripts/import_labels.py --db FILE_OR_URL labels.csv
[--dry-run] [--author NAME].

The CSV has a header row with ``accession`` or ``study_uid`` (or both), and ``label`` (abnormal / normal, also
1 / 0); optional ``body_part`` (the correct part) and ``source`` (import, the default; reader or ris). Each row's
study is found by its UID, else by its accession number. Prints how many rows matched, which did not (no such study
in the worklist), which conflict (two rows of the file disagree, or the study's current label says otherwise, unless
--replace: those are not recorded) and which are malformed; exits 1 when any row was malformed. ``--dry-run``
records nothing. Every recorded label names the file and line it came from.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
from collections import defaultdict

from mura_mt.site.labels import LabelError, SiteLabels, parse_body_part, parse_label
from mura_mt.dicom_node.store import WorklistStore


def _rows(path: str) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if "label" not in columns or not columns & {"accession", "study_uid"}:
            raise LabelError(f"{path} needs a header with label and accession or study_uid; it has {sorted(columns)}")
        return [(number, row) for number, row in enumerate(reader, start=2)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="the labels file")
    parser.add_argument("--db", required=True, help="the worklist store: a SQLite file or a postgresql:// URL")
    parser.add_argument("--author", default=None, help="who the labels are recorded under (default: your login)")
    parser.add_argument("--dry-run", action="store_true", help="report what would happen; record nothing")
    parser.add_argument("--replace", action="store_true", help="a row may replace a study's different current label")
    args = parser.parse_args(argv)
    try:
        rows = _rows(args.csv)
    except (OSError, LabelError) as err:
        parser.exit(2, f"import_labels.py: {err}\n")
    store = WorklistStore(args.db, node="import")
    labels, author = SiteLabels(store), args.author or getpass.getuser()
    report: dict[str, list] = {"matched": [], "unmatched": [], "conflicting": [], "malformed": []}
    by_study: dict[str, list[tuple[int, dict, int]]] = defaultdict(list)
    for number, row in rows:
        uid, accession = (row.get("study_uid") or "").strip(), (row.get("accession") or "").strip()
        try:
            value, _ = parse_label(row.get("label")), parse_body_part(row.get("body_part"))
            if not (uid or accession):
                raise LabelError("no study_uid or accession")
        except LabelError as err:
            report["malformed"].append((number, str(err)))
            continue
        study_uid = labels.find(uid or None, accession or None)
        if study_uid is None:
            report["unmatched"].append((number, uid or f"accession {accession}"))
            continue
        by_study[study_uid].append((number, row, value))
    for study_uid, entries in by_study.items():
        current = labels.current(study_uid)
        values = {value for _, _, value in entries}
        if len(values) > 1 or (current is not None and current["label"] not in values and not args.replace):
            why = "rows of the file disagree" if len(values) > 1 else "the study's current label differs"
            report["conflicting"] += [(number, f"{study_uid}: {why}") for number, _, _ in entries]
            continue
        number, row, value = entries[-1]
        if not args.dry_run:
            labels.record(value, (row.get("source") or "import").strip(), author, study_uid=study_uid,
                          body_part=row.get("body_part") or "", note=f"{args.csv} line {number}")  # fmt: skip
        report["matched"] += [number for number, _, _ in entries]
    verb = "would be recorded" if args.dry_run else "recorded"
    print(f"{len(report['matched'])} row(s) matched and {verb}; {len(report['unmatched'])} unmatched, "
          f"{len(report['conflicting'])} conflicting, {len(report['malformed'])} malformed")  # fmt: skip
    for kind in ("unmatched", "conflicting", "malformed"):
        for number, why in report[kind]:
            print(f"  line {number}: {kind}: {why}")
    if report["malformed"]:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
