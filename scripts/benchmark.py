"""Speed, measured as figures and ratios within one run: python scripts/benchmark.py [--only training|inference]
[--quick] --out FILE.json.

training (per process, on CUDA when present, else the CPU):
    loader_images_per_s   the host side alone: what the DataLoader workers deliver from a uint8 image cache at
                          --loader-size px (320, the real recipe) with the default worker count; no model.
    compute_images_per_s  the model alone: forward, multi-task loss, backward, fused AdamW step on preloaded,
                          normalised device tensors at --image-size.
    loop_images_per_s     the real loop (``train_one_epoch``: loader -> device augmentation -> normalise -> model
                          -> clipped step under Accelerate) at --image-size.
    loop_vs_compute       the loop's share of the bare compute (goal >= 0.9).
    On CUDA the compute and loop figures are also taken with torch.compile (``*_compiled``).
inference: Predictor.predict latency at batch 1 against a bare resnet18 forward (goals <= 1.10, <= 1.25 with
    the Grad-CAM explanation).
Every figure is the median of interleaved repeats: the machine is noisy, so read medians and ratios.
--quick smokes every measurement in seconds (CI runs it); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from accelerate import Accelerator
from PIL import Image

from mura_mt.calibration import Calibration
from mura_mt.config import TrainConfig, load_config
from mura_mt.data.augment import DeviceAugment
from mura_mt.data.prepare import SplitData
from mura_mt.labels import BODY_PARTS
from mura_mt.losses import multitask_loss, mura_class_weights
from mura_mt.model import MultiTaskNet
from mura_mt.predictor import Predictor
from mura_mt.preprocessing import resolve_preprocessing
from mura_mt.training import StepContext, build_dataloaders, build_optimizer, train_one_epoch


def _table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "path": [f"img{i}" for i in range(n)],
            "body_part": [BODY_PARTS[i % 7] for i in range(n)],
            "label": rng.integers(0, 2, n),
            "study_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "cache_row": np.arange(n),
        }
    )


def _disk_cache(folder: Path, n: int, size: int) -> np.ndarray:
    """A uint8 [n, 1, size, size] memory map on disk, as the real image cache is (a new file per call: workers
    of an earlier loader may still map the previous one)."""
    file = folder / f"cache-{len(list(folder.glob('cache-*')))}.npy"
    array = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=(n, 1, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, n, 256):
        array[start : start + 256] = rng.integers(0, 256, array[start : start + 256].shape, dtype=np.uint8)
    array.flush()
    return np.load(file, mmap_mode="r")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_loader_rate(folder: Path, n: int, size: int, batch: int, workers: int):
    """A function that reads one epoch through the training DataLoader (no model) and returns images/s."""
    cfg = load_config(None, [f"data.image_size={size}", f"train.batch_size={batch}", f"train.num_workers={workers}"])
    data = SplitData(_table(n), _disk_cache(folder, n, size))
    loader, _ = build_dataloaders(cfg, data, data, pin_memory=torch.cuda.is_available())

    def run() -> float:
        start, seen = time.perf_counter(), 0
        for batch_ in loader:
            seen += len(batch_["image"])
        return seen / (time.perf_counter() - start)

    run()  # warm-up: starts the persistent workers and pages the cache in
    return run


def make_compute_rate(device: torch.device, batch: int, size: int, steps: int, precision: str, compile_: bool):
    """Bare model steps on a preloaded, normalised device batch: the ceiling the loop is measured against."""
    model = MultiTaskNet("resnet18").to(device, memory_format=torch.channels_last).train()
    if compile_:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    part = torch.randint(0, 7, (batch,), device=device)
    label = torch.randint(0, 2, (batch,), device=device).float()
    weights = torch.ones(7, 2, device=device)

    def run() -> float:
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = multitask_loss(model(x), part, label, weights)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        return steps * batch / (time.perf_counter() - start)

    run()  # warm-up (and compilation)
    return run


def make_loop_rate(folder: Path, batch: int, size: int, steps: int, precision: str, compile_: bool):
    """One epoch of OUR loop over ``steps`` batches of an on-disk cache; returns images/s."""
    overrides = [f"data.image_size={size}", f"train.batch_size={batch}", "model.pretrained=false"]
    cfg = load_config(None, [*overrides, f"train.mixed_precision={precision}", "train.epochs=1"])
    n = batch * steps
    data = SplitData(_table(n), _disk_cache(folder, n, size))
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    model = MultiTaskNet("resnet18").to(memory_format=torch.channels_last)
    if compile_:
        model.compile()
    train_loader, _ = build_dataloaders(cfg, data, data, pin_memory=accelerator.device.type == "cuda")
    optimizer, scheduler = build_optimizer(model, cfg, len(train_loader))
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    step = StepContext(
        cfg=cfg,
        prep=resolve_preprocessing(accelerator.unwrap_model(model).backbone, size),
        class_weights=mura_class_weights(data.table),
        augment=DeviceAugment(cfg.train.augment, size, cfg.train.seed),
        epoch=0,
    )

    def run() -> float:
        _synchronize(accelerator.device)
        start = time.perf_counter()
        train_one_epoch(model, train_loader, optimizer, scheduler, accelerator, step)
        _synchronize(accelerator.device)
        return n / (time.perf_counter() - start)

    run()
    return run


def _interleaved_medians(runners: dict, repeats: int) -> dict[str, float]:
    """Run every runner once per round, ``repeats`` rounds, so drift on a noisy machine hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            rates[name].append(run())
    return {name: statistics.median(values) for name, values in rates.items()}


def training_block(args, device: torch.device) -> dict:
    precision = "bf16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "no"
    workers = TrainConfig().num_workers
    with tempfile.TemporaryDirectory(prefix="mura-mt-bench-") as folder:
        folder = Path(folder)
        loader = make_loader_rate(folder, args.loader_images, args.loader_size, args.batch_size, workers)
        runners = {
            "loader": loader,
            "compute": make_compute_rate(device, args.batch_size, args.image_size, args.steps, precision, False),
            "loop": make_loop_rate(folder, args.batch_size, args.image_size, args.steps, precision, False),
        }
        if device.type == "cuda" and not args.quick:
            runners["compute_compiled"] = make_compute_rate(
                device, args.batch_size, args.image_size, args.steps, precision, True
            )
            runners["loop_compiled"] = make_loop_rate(
                folder, args.batch_size, args.image_size, args.steps, precision, True
            )
        rates = _interleaved_medians(runners, args.repeats)
    block = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision": precision,
        "channels_last": True,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "loader_image_size": args.loader_size,
        "loader_workers": workers,
        "loader_images_per_s": rates["loader"],
        "compute_images_per_s": rates["compute"],
        "loop_images_per_s": rates["loop"],
        "loop_vs_compute": rates["loop"] / rates["compute"],
        "goals": {"loader_images_per_s": ">= 2500", "loop_vs_compute": ">= 0.9"},
    }
    for name in ("compute_compiled", "loop_compiled"):
        if name in rates:
            block[f"{name.split('_')[0]}_images_per_s_compiled"] = rates[name]
    return block


def latency_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def inference_block(size: int, repeats: int) -> dict:
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
    lat = {k: statistics.median(v) for k, v in results.items()}
    return {
        **lat,
        "predict_ratio": lat["predict_ms"] / lat["bare_forward_ms"],
        "explain_ratio": lat["predict_explain_ms"] / lat["bare_forward_ms"],
        "goals": {"predict_ratio": "<= 1.10", "explain_ratio": "<= 1.25"},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", choices=["training", "inference"], help="measure one block only")
    parser.add_argument("--quick", action="store_true", help="smoke every measurement with tiny sizes (for CI)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--loader-size", type=int, default=320, help="image size of the loader measurement")
    parser.add_argument("--loader-images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.loader_size, args.loader_images = 64, 64, 256
        args.batch_size, args.steps, args.repeats = 8, 2, 1

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    if args.only in (None, "training"):
        report["training"] = training_block(args, device)
    if args.only in (None, "inference"):
        report["inference"] = inference_block(args.image_size, repeats=2 if args.quick else max(10, args.repeats * 5))
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
