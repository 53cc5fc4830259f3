"""How often does the "unlike the training images" warning fire? scripts/check_ood.py --checkpoint CKPT --out F.json

Real images: the CR, CT, MR, NM and ultrasound files of pydicom-data and matplotlib's photo (dev extras; never
MURA). In-distribution: a fresh synthetic tree drawn from ``--seed`` (pick one the checkpoint never saw; the demo
trained on seed 0). Everything goes through the Predictor, so it measures what users see.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mura_mt.bench.ood import measure_warnings
from mura_mt.data import read_mura_index
from mura_mt.data.synthetic import make_synthetic_mura
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import RUNTIMES


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/demo")
    parser.add_argument("--seed", type=int, default=9173, help="generator seed of the fresh synthetic views")
    parser.add_argument("--studies-per-part", type=int, default=10)
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: auto, as the app serves")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    predictor = Predictor.from_pretrained(args.checkpoint, precision=args.precision, runtime=args.runtime)
    with tempfile.TemporaryDirectory() as fresh:
        make_synthetic_mura(fresh, args.studies_per_part, args.studies_per_part, seed=args.seed)
        paths = [str(p) for split in ("train", "valid") for p in read_mura_index(fresh, split)["path"]]
        report = {"checkpoint": args.checkpoint, "runtime": predictor.runtime, "precision": predictor.precision,
                  "fresh_seed": args.seed, **measure_warnings(predictor, paths)}  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"{predictor.runtime} {predictor.precision} warned: {report['radiograph_files_warned']:.0%} of {report['radiograph_files']} radiograph files, "
        f"{report['radiograph_views_warned']:.0%} of {report['radiograph_views']} views derived from them, "
        f"{report['fresh_synthetic_warned']:.1%} of {report['fresh_synthetic_views']} fresh synthetic views"
    )
    for name, item in report["images"].items():
        print(f"  {name:40s} {'WARNED' if item['warned'] else 'missed'}  score {item['unlike_training']:.2f}")
    return report


if __name__ == "__main__":
    main()
