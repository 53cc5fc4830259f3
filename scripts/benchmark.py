"""Speed as ratios against a bare timm ResNet-18 measured in the same run: python scripts/benchmark.py --out FILE.json.

training: images/s of our training loop (cached uint8 images -> augmentation -> normalize -> multi-task loss ->
    clipped AdamW step under Accelerate) / images/s of a bare timm resnet18 step on preloaded float tensors, at
    the same batch size and precision. Goal >= 0.9.
predict: latency of Predictor.predict(image) at batch 1 / a bare resnet18 forward on a preloaded tensor.
    Goal <= 1.10; with the Grad-CAM explanation <= 1.25.
Each figure is the median of several repeats; the machine is noisy, so read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd
import timm
import torch
from accelerate import Accelerator
from PIL import Image

from mura_mt.calibration import Calibration
from mura_mt.config import load_config
from mura_mt.data.prepare import SplitData
from mura_mt.data.transforms import resolve_preprocessing
from mura_mt.labels import BODY_PARTS
from mura_mt.losses import mura_class_weights
from mura_mt.model import MultiTaskNet
from mura_mt.predictor import Predictor
from mura_mt.training import build_dataloaders, build_optimizer, train_one_epoch


def make_bare_training(batch: int, size: int, steps: int, precision: str):
    """A function that runs ``steps`` bare timm steps on one preloaded batch and returns images/s."""
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return steps * batch / (time.perf_counter() - start)

    run()  # warm-up
    return run


def make_our_training(batch: int, size: int, steps: int, precision: str):
    """A function that runs one epoch of OUR loop (``steps`` batches from an in-memory cache), returns images/s."""
    cfg = load_config(
        None,
        [
            f"data.image_size={size}",
            f"train.batch_size={batch}",
            "model.pretrained=false",
            f"train.mixed_precision={precision}",
            "train.epochs=1",
        ],
    )
    n = batch * steps
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "path": [f"img{i}" for i in range(n)],
            "body_part": [BODY_PARTS[i % 7] for i in range(n)],
            "label": rng.integers(0, 2, n),
            "study_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "cache_row": np.arange(n),
        }
    )
    data = SplitData(table, rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8))
    accelerator = Accelerator(cpu=True, mixed_precision=precision)
    model = MultiTaskNet("resnet18").to(memory_format=torch.channels_last)
    train_loader, _ = build_dataloaders(cfg, data, data)
    optimizer, scheduler = build_optimizer(model, cfg, len(train_loader))
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    ctx = {
        "cfg": cfg,
        "prep": resolve_preprocessing(accelerator.unwrap_model(model).backbone, size),
        "class_weights": mura_class_weights(table),
    }

    def run() -> float:
        start = time.perf_counter()
        train_one_epoch(model, train_loader, optimizer, scheduler, accelerator, ctx)
        return n / (time.perf_counter() - start)

    run()
    return run


def latency_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def predict_latencies(size: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    bare = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    x = torch.randn(1, 3, size, size)
    config = {
        "preprocessing": {"image_size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "calibration": Calibration().to_dict(),
        "ood": {},
    }
    predictor = Predictor(MultiTaskNet("resnet18"), config)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 400), dtype=np.uint8), mode="L")

    def bare_forward():
        with torch.inference_mode():
            bare(x)

    results = {"bare_forward_ms": [], "predict_ms": [], "predict_explain_ms": []}
    for _ in range(3):  # interleave rounds so drift on a noisy machine hits every variant alike
        results["bare_forward_ms"].append(latency_ms(bare_forward, repeats))
        results["predict_ms"].append(latency_ms(lambda: predictor.predict(image), repeats))
        results["predict_explain_ms"].append(latency_ms(lambda: predictor.predict(image, explain=True), repeats))
    return {k: statistics.median(v) for k, v in results.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="bf16", choices=["no", "bf16"])
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)

    report: dict = {"torch_threads": torch.get_num_threads(), "image_size": args.image_size}
    if not args.skip_training:
        bare = make_bare_training(args.batch_size, args.image_size, args.steps, args.precision)
        ours = make_our_training(args.batch_size, args.image_size, args.steps, args.precision)
        rounds = [(bare(), ours()) for _ in range(args.repeats)]  # interleaved
        bare_rate, our_rate = (statistics.median(r[i] for r in rounds) for i in (0, 1))
        report["training"] = {
            "batch_size": args.batch_size,
            "precision": args.precision,
            "bare_images_per_s": bare_rate,
            "ours_images_per_s": our_rate,
            "ratio": our_rate / bare_rate,
            "goal": ">= 0.9",
        }
    lat = predict_latencies(args.image_size, repeats=max(10, args.repeats * 5))
    report["predict"] = {
        **lat,
        "predict_ratio": lat["predict_ms"] / lat["bare_forward_ms"],
        "explain_ratio": lat["predict_explain_ms"] / lat["bare_forward_ms"],
        "goals": {"predict_ratio": "<= 1.10", "explain_ratio": "<= 1.25"},
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
