"""Is model B better than model A? python scripts/compare.py EVAL_A EVAL_B --out DIR [--resamples N] [--seed S].

EVAL_A and EVAL_B are evaluate.py output folders of the SAME split (the same studies with the same labels; anything
else is refused with the offenders named). Writes DIR/compare.json (overall and each body part:
{metric: {a, b, diff, ci95, p}} for study_kappa, study_auroc, sensitivity and specificity, plus delong_p, mcnemar_p
and studies), DIR/compare.html (self-contained) and DIR/compare.md with a forest plot, and prints a plain reading
and what each side was (checkpoint and split hashes, runtime, precision) side by side.
"""

from __future__ import annotations

import argparse

from mura_mt.evaluation.compare import (
    DEFAULT_RESAMPLES,
    METRICS,
    ComparisonError,
    compare,
    groups,
    load_evaluation,
    plain_reading,
)
from mura_mt.evaluation.compare_report import PROVENANCE, write_comparison


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_a", help="evaluate.py output folder of model A (the baseline)")
    parser.add_argument("eval_b", help="evaluate.py output folder of model B (the candidate)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="paired bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        a, b = load_evaluation(args.eval_a), load_evaluation(args.eval_b)
        result = compare(a, b, args.resamples, args.seed)
    except ComparisonError as err:
        parser.exit(2, f"compare.py: {err}\n")
    width = max(len(k) for k in PROVENANCE)
    print(f"{'':<{width}}  A | B")
    for key in PROVENANCE:
        print(f"{key:<{width}}  {a.source.get(key, '-')} | {b.source.get(key, '-')}")
    if a.source.get("split_sha256") and a.source.get("split_sha256") != b.source.get("split_sha256"):
        print("note: the split hashes differ, although the studies and labels match")
    print(
        f"\n{'group':<9} {'studies':>7} " + " ".join(f"{m:>30}" for m in METRICS) + f" {'DeLong p':>9} {'McNemar p':>9}"
    )
    for group in groups(result):
        entry = result[group]
        cells = []
        for metric in METRICS:
            m = entry[metric]
            interval = f"[{m['ci95'][0]:+.3f},{m['ci95'][1]:+.3f}]" if m["ci95"] else "[  -  ]"
            cells.append(f"{m['diff']:+.3f} {interval}" if m["diff"] is not None else "-")
        delong, mcnemar = entry["delong_p"], entry["mcnemar_p"]
        print(
            f"{group:<9} {entry['studies']:>7} "
            + " ".join(f"{c:>30}" for c in cells)
            + f" {delong if delong is None else round(delong, 4)!s:>9} {round(mcnemar, 4)!s:>9}"
        )
    json_file, html_file, md_file = write_comparison(args.out, result)
    print(f"\n{plain_reading(result)}\nwrote {json_file}, {html_file} and {md_file}")
    return result


if __name__ == "__main__":
    main()
