"""Predict files, folders or a MURA CSV: python scripts/predict.py --checkpoint CKPT INPUT... --out FILE.csv.

Views in the same folder form one study (the part is decided once for the study). Writes one row per image:
path, study, body_part, part_prob, abnormal_prob, is_abnormal, study_abnormal_prob, study_is_abnormal,
warnings (and the error for unreadable files, which are reported, never skipped silently). With --cam-dir,
also writes Grad-CAM overlays. Under `accelerate launch` the studies are sharded over the processes and the
main process writes the one CSV.

Speed (``mura_mt.inference.bulk``): studies are packed into batches of about --batch-size images (a study is never
split), each batch is one forward, threads decode the next batch while the model runs. --runtime auto runs the
checkpoint's gated int8 graph on x86 CPUs, else PyTorch bf16 where the CPU has it natively or ONNX Runtime fp32, and
PyTorch on a GPU (mura_mt.inference.runners.resolve_runtime says which and why at start).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import pandas as pd
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from mura_mt.inference.bulk import predict_files
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import RUNTIMES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def collect_studies(inputs: list[str]) -> dict[str, list[str]]:
    """Study folder -> image paths, from files, folders (recursively) and MURA/plain CSVs."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(
                p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("._")
            )
        elif item.suffix.lower() == ".csv":
            first = item.read_text().splitlines()[0]
            if first.startswith("MURA-v1.1/"):  # official header-less image list, relative to MURA's parent
                paths += [item.parent.parent / line.strip() for line in item.read_text().splitlines() if line.strip()]
            else:
                paths += [Path(p) if Path(p).is_absolute() else item.parent / p for p in pd.read_csv(item)["path"]]
        elif item.exists():
            paths.append(item)
        else:
            raise SystemExit(f"input not found: {item}")
    studies: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        studies[str(path.parent)].append(str(path))
    return dict(studies)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("inputs", nargs="+", help="image files, folders or CSVs")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--body-part", default=None, help="gate every study by this part instead of the predicted one")
    parser.add_argument("--cam-dir", default=None, help="write Grad-CAM overlay PNGs here")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass, studies kept whole (default: the runtime's, 8 for ONNX Runtime, "
                        "32 for PyTorch)")  # fmt: skip
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: env MURA_MT_RUNTIME, else auto")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: the usable cores)")
    args = parser.parse_args(argv)

    # Unlike Accelerator, a bare PartialState ignores ACCELERATE_USE_CPU and would run every CPU rank as rank 0.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    studies = collect_studies(args.inputs)
    predictor = Predictor.from_pretrained(
        args.checkpoint, device=state.device, precision=args.precision, runtime=args.runtime
    )
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    rows: list[dict] = []
    with state.split_between_processes(sorted(studies)) as mine:
        rows = predict_files(
            predictor,
            {study: studies[study] for study in mine},
            args.body_part,
            cam_dir,
            args.batch_size,
            args.workers,
            progress=state.is_local_main_process,
        )
    part_file = out.with_name(f".{out.name}.rank{state.process_index}")
    pd.DataFrame(rows).to_csv(part_file, index=False)
    state.wait_for_everyone()
    table = pd.DataFrame()
    if state.is_main_process:
        parts = [out.with_name(f".{out.name}.rank{r}") for r in range(state.num_processes)]
        table = pd.concat([pd.read_csv(p) for p in parts if p.stat().st_size > 1], ignore_index=True)
        table.to_csv(out, index=False)
        for p in parts:
            p.unlink()
        failed = int(table["error"].fillna("").astype(bool).sum()) if "error" in table else 0
        print(
            f"wrote {len(table)} rows for {len(studies)} studies from {state.num_processes} processes to {out}"
            + (f"; {failed} unreadable" if failed else "")
        )
    return table


if __name__ == "__main__":
    main()
