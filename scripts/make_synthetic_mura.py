"""Write a synthetic MURA-v1.1 tree: python scripts/make_synthetic_mura.py --out DIR [--studies-per-part N]
[--dicom [--dicom-split valid] [--transfer-syntax explicit|deflate|rle|jpeg2000] [--dicom-studies N]].

--dicom also writes the split's studies as DICOM CR files (realistic tags, MONOCHROME1 and 2) to DIR/dicom/, with
DIR/dicom/studies.csv mapping each StudyInstanceUID to its MURA study, body part and label.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mura_mt.data.synthetic import make_synthetic_mura
from mura_mt.data.synthetic_dicom import TRANSFER_SYNTAXES, write_dicom_studies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder that will contain MURA-v1.1/")
    parser.add_argument("--studies-per-part", type=int, default=100, help="train studies per body part")
    parser.add_argument("--valid-studies-per-part", type=int, default=None, help="default: a quarter of train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes drawing images")
    parser.add_argument("--dicom", action="store_true", help="also write the studies of --dicom-split as DICOM")
    parser.add_argument("--dicom-split", default="valid", choices=["train", "valid"])
    parser.add_argument("--transfer-syntax", default="explicit", choices=TRANSFER_SYNTAXES)
    parser.add_argument("--dicom-studies", type=int, default=None, help="write only the first N studies as DICOM")
    args = parser.parse_args(argv)
    valid = (
        args.valid_studies_per_part if args.valid_studies_per_part is not None else max(1, args.studies_per_part // 4)
    )
    start = time.perf_counter()
    mura_dir = make_synthetic_mura(args.out, args.studies_per_part, valid, args.seed, args.workers, progress=True)
    print(f"wrote {mura_dir} in {time.perf_counter() - start:.1f} s")
    if args.dicom:
        out = Path(args.out) / "dicom"
        folders = write_dicom_studies(
            mura_dir, out, args.dicom_split, args.transfer_syntax, args.seed, limit=args.dicom_studies
        )
        print(f"wrote {len(folders)} DICOM studies ({args.transfer_syntax}) and {out / 'studies.csv'}")


if __name__ == "__main__":
    main()
