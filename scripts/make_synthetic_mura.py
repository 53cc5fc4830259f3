"""Write a synthetic MURA-v1.1 tree: python scripts/make_synthetic_mura.py --out DIR [--studies-per-part N]."""

from __future__ import annotations

import argparse
import time

from mura_mt.data.synthetic import make_synthetic_mura


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder that will contain MURA-v1.1/")
    parser.add_argument("--studies-per-part", type=int, default=100, help="train studies per body part")
    parser.add_argument("--valid-studies-per-part", type=int, default=None, help="default: a quarter of train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes drawing images")
    args = parser.parse_args(argv)
    valid = (
        args.valid_studies_per_part if args.valid_studies_per_part is not None else max(1, args.studies_per_part // 4)
    )
    start = time.perf_counter()
    mura_dir = make_synthetic_mura(args.out, args.studies_per_part, valid, args.seed, args.workers, progress=True)
    print(f"wrote {mura_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
