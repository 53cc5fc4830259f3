"""Speed, measured as figures and ratios within one run:
python scripts/benchmark.py [--only training|inference|dicom|worklist|site] [--quick] --out FILE.json.

training (per process, on CUDA when present, else the CPU; mura_mt/bench/training.py):
    loader_images_per_s   the host side alone: what the DataLoader workers deliver from a uint8 image cache at
                          --loader-size px (320, the real recipe) with the default worker count; no model.
    compute_images_per_s  the model alone: forward, multi-task loss, backward, fused AdamW step on preloaded,
                          normalised device tensors at --image-size.
    loop_images_per_s     the real loop (``train_one_epoch``: loader -> device augmentation -> normalise -> model
                          -> clipped step under Accelerate) at --image-size; loop_vs_compute (goal >= 0.9).
    On CUDA the compute and loop figures are also taken with torch.compile (``*_compiled``).
inference (mura_mt/bench/inference.py, runtimes.py and, for the app, serving.py): Predictor latencies (in the runtime
    ``--runtime auto`` picks, and in PyTorch fp32) against a bare resnet18 forward and against the two-stage design
    (two_stage_ratio, goal <= 0.55), throughput at batch 1/8/32 in fp32 and bf16, PyTorch against ONNX Runtime
    fp32 and int8 at 224 and 320 px, batch 1 and 16, with and without Grad-CAM (``runtimes``), what the default
    runtime serves against PyTorch fp32 on unseen images: speed, agreement and warnings (``default_runtime.py``),
    bulk prediction on PNG and DICOM against sequential calls with the cores' physical limit (``bulk.py``),
    parameters and resident memory of one model vs eight, and the real app through gradio_client: cold start,
    requests/s and p50/p95 at concurrency 1, 4 and 16.
dicom (mura_mt/bench/dicom.py): synthetic studies through a real Orthanc -> scripts/dicom_node.py -> Orthanc on
    loopback: studies_per_min, p50_s/p95_s from a study's quiet period ending to its SR stored in Orthanc, and
    throughput_ratio against in-process Predictor.predict_study with Grad-CAM (goal >= 0.6).
worklist (mura_mt/bench/worklist.py): 10,000 studies on SQLite and on a real PostgreSQL: the store's first page against
    a naive sort in Python, the /worklist call through gradio_client (goal < 200 ms), and in a real Chromium the
    worklist's first page drawn after opening the app (goal < 1 s) and a page turn.
site (mura_mt/bench/site.py): a year at a busy site, 10,000, 100,000 and 1,000,000 studies (30 % labelled) on SQLite
    and a real PostgreSQL: the pages' poll, the worklist's pages, the Performance figures (first and shared), a
    Prometheus scrape, the drift check, disk per 100,000 studies, the ratio 1M / 10k; then app.py on the million.
Every figure is the median of interleaved repeats: the machine is noisy, so read medians and ratios.
--quick smokes every measurement in seconds (CI runs it); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mura_mt.bench.dicom import dicom_block
from mura_mt.bench.bulk import bulk_block
from mura_mt.bench.default_runtime import default_block
from mura_mt.bench.inference import inference_block
from mura_mt.bench.runtimes import runtime_block
from mura_mt.bench.serving import serving_block
from mura_mt.bench.site import site_block
from mura_mt.bench.training import training_block
from mura_mt.bench.worklist import worklist_block
from mura_mt.hardware import describe_cpu

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", choices=["training", "inference", "dicom", "worklist", "site"],
                        help="measure one block only")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke every measurement with tiny sizes (for CI)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--loader-size", type=int, default=320, help="image size of the loader measurement")
    parser.add_argument("--loader-images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=None, help="what the app serves in the serving figures (default: demo)")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.loader_size, args.loader_images = 64, 64, 256
        args.batch_size, args.steps, args.repeats = 8, 2, 1

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "cpu": describe_cpu(),
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    if args.only in (None, "training"):
        report["training"] = training_block(args, device)
    if args.only in (None, "inference"):
        report["inference"] = inference_block(args.image_size, args.quick, device)
        report["inference"]["default"] = default_block(Path(args.checkpoint or DEMO_CHECKPOINT), args.quick)
        report["inference"]["runtimes"] = runtime_block(Path(args.checkpoint or DEMO_CHECKPOINT), args.quick)
        report["inference"]["bulk"] = bulk_block(args.checkpoint or str(DEMO_CHECKPOINT), args.quick)
        report["inference"]["serving"] = serving_block(args.checkpoint, args.quick)
    if args.only in (None, "dicom"):
        report["dicom"] = dicom_block(args.checkpoint or str(DEMO_CHECKPOINT), args.quick)
    if args.only in (None, "worklist"):
        report["worklist"] = worklist_block(args.quick)
    if args.only in (None, "site"):
        report["site"] = site_block(args.quick)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
