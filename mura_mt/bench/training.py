"""The training block of scripts/benchmark.py: loader, bare compute and the real loop, per process."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from mura_mt.config import TrainConfig, load_config
from mura_mt.data.augment import DeviceAugment
from mura_mt.data.prepare import SplitData
from mura_mt.hardware import describe_cpu, resolve_mixed_precision
from mura_mt.imaging.preprocessing import resolve_preprocessing
from mura_mt.labels import BODY_PARTS
from mura_mt.model import MultiTaskNet
from mura_mt.training.loop import StepContext, build_dataloaders, build_optimizer, train_one_epoch
from mura_mt.training.losses import multitask_loss, mura_class_weights


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


def synchronize(device: torch.device) -> None:
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
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = multitask_loss(model(x), part, label, weights)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(device)
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
        synchronize(accelerator.device)
        start = time.perf_counter()
        train_one_epoch(model, train_loader, optimizer, scheduler, accelerator, step)
        synchronize(accelerator.device)
        return n / (time.perf_counter() - start)

    run()
    return run


def interleaved_medians(runners: dict, repeats: int) -> dict[str, float]:
    """Run every runner once per round, ``repeats`` rounds, so drift on a noisy machine hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            rates[name].append(run())
    return {name: statistics.median(values) for name, values in rates.items()}


def training_block(args, device: torch.device) -> dict:
    # What training really uses here (train.mixed_precision: auto): bf16 only where it is native, so an AVX2 CPU
    # measures fp32 instead of an emulated bf16 that is 4x slower.
    precision, _ = resolve_mixed_precision("auto", use_cpu=device.type == "cpu")
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
        rates = interleaved_medians(runners, args.repeats)
    block = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu(),
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
