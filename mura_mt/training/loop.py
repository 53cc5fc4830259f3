"""Training under Accelerate: loaders, one epoch, evaluation, resumable state; the best epoch goes to ``release``.

``fit(cfg, accelerator)`` is the whole run; ``scripts/train.py`` only parses and calls it. Resumable state
(model, optimizer, scheduler, progress) is Accelerate's ``save_state``, written to a temporary folder and renamed
with a COMPLETE marker; the served checkpoint is made by ``release.export_best``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mura_mt.inference.calibration import Calibration
from mura_mt.config import Config, save_config
from mura_mt.data.augment import DeviceAugment
from mura_mt.data.dataset import CachedImages, batch_collate
from mura_mt.data.prepare import SplitData, prepare_data
from mura_mt.training.losses import multitask_loss, mura_class_weights
from mura_mt.evaluation.metrics import compute_metrics
from mura_mt.model import MultiTaskNet, build_model
from mura_mt.inference.ood import OodFeatures, StageStatistics
from mura_mt.imaging.preprocessing import Preprocessing, normalize, resolve_preprocessing
from mura_mt.training.release import export_best
from mura_mt.training.state import latest_state, save_state

logger = get_logger(__name__)


@dataclass
class Progress:
    """What a resumed run must know beyond weights and optimiser: saved by ``save_state`` as a custom object."""

    epoch: int = 0
    best_kappa: float = -math.inf
    best_epoch: int = -1
    history: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class StepContext:
    """What a training epoch needs beyond the prepared model, loader, optimiser and scheduler."""

    cfg: Config
    prep: Preprocessing
    class_weights: torch.Tensor
    augment: DeviceAugment
    epoch: int


def build_dataloaders(
    cfg: Config, train: SplitData, val: SplitData, pin_memory: bool = False
) -> tuple[DataLoader, DataLoader]:
    """Loaders of uint8 batches; workers only slice the cache (augmentation runs on the device, in the loop)."""
    common = dict(
        num_workers=cfg.train.num_workers,
        persistent_workers=cfg.train.num_workers > 0,
        collate_fn=batch_collate,
        pin_memory=pin_memory,
    )
    train_loader = DataLoader(
        CachedImages(train.images, train.table),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=len(train.table) > cfg.train.batch_size,
        **common,
    )
    val_loader = DataLoader(CachedImages(val.images, val.table), batch_size=cfg.train.eval_batch_size, **common)
    return train_loader, val_loader


def start_from_checkpoint(cfg: Config) -> MultiTaskNet:
    """The network of the checkpoint ``model.init_from`` (backbone and all eight heads, hash-checked), to fine-tune
    instead of starting from ImageNet weights."""
    from mura_mt.inference.checkpoint import load_checkpoint

    trained, config = load_checkpoint(cfg.model.init_from)
    if config["model"]["backbone"] != cfg.model.backbone:
        theirs = config["model"]["backbone"]
        raise ValueError(f"model.init_from={cfg.model.init_from} is a {theirs} checkpoint, but model.backbone is "
                         f"{cfg.model.backbone}: set model.backbone={theirs}")  # fmt: skip
    logger.info(f"starting from {cfg.model.init_from} (weights sha256 {config['weights_sha256'][:12]}...)")
    model = build_model(dataclasses.replace(cfg.model, pretrained=False, pretrained_file=None))  # drop_rate kept
    model.load_state_dict(trained.state_dict())
    return model


def scaled_lr(cfg: Config, num_processes: int) -> float:
    """``train.lr`` is meant for a global batch of ``train.lr_base_batch``; larger global batches (more
    processes) scale it linearly (SGD's rule, Goyal et al. 2017), by the square root (Adam-family optimisers,
    Malladi et al. 2022) or not at all, as ``train.lr_scaling`` says."""
    ratio = cfg.train.batch_size * num_processes / cfg.train.lr_base_batch
    factors = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
    if cfg.train.lr_scaling not in factors:
        raise ValueError(f"train.lr_scaling must be one of {sorted(factors)}, got {cfg.train.lr_scaling!r}")
    return cfg.train.lr * factors[cfg.train.lr_scaling]


def build_optimizer(model: torch.nn.Module, cfg: Config, steps_per_epoch: int, lr: float | None = None):
    """AdamW (fused: it can skip a step on the device, see ``train_one_epoch``), linear warm-up then cosine decay
    (per optimiser step)."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.train.lr if lr is None else lr,
        fused=True,
    )
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warmup = max(1, int(cfg.train.warmup_epochs * steps_per_epoch))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train_one_epoch(
    model, loader, optimizer, scheduler, accelerator: Accelerator, step: StepContext
) -> dict[str, float]:
    """One pass over the training loader. Steps with a non-finite loss or gradient change no weight.

    Nothing in the loop waits for the device: losses are summed on it, and a bad step is skipped by the fused
    optimiser itself (its ``found_inf`` input) or, under fp16, by Accelerate's GradScaler, which must see every
    step (skipping ``optimizer.step()`` would leave it unable to unscale the next one). One host sync per epoch
    reads the totals.
    """
    cfg = step.cfg
    model.train()
    inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer  # under Accelerate's wrapper
    scaler_driven = accelerator.scaler is not None
    device = accelerator.device
    totals: dict[str, torch.Tensor] = {}
    skipped = torch.zeros((), device=device)
    steps, images, start = 0, 0, time.perf_counter()
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    for batch in tqdm(loader, desc="train", disable=not accelerator.is_local_main_process, leave=False):
        pixels = step.augment(batch["image"], batch["index"], step.epoch)  # [B, 1, S, S], on the device
        x = normalize(pixels, step.prep).contiguous(memory_format=memory_format)
        out = model(x)
        losses = multitask_loss(
            out,
            batch["part"],
            batch["label"],
            step.class_weights,
            cfg.train.part_loss_weight,
            cfg.train.anomaly_loss_weight,
        )
        accelerator.backward(losses["loss"])
        # After DDP's all-reduce (and the GradScaler's unscale under fp16), so every rank decides alike.
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        bad = ~(torch.isfinite(grad_norm) & torch.isfinite(losses["loss"].detach()))
        if not scaler_driven:
            inner.found_inf = bad.float()  # fused AdamW leaves weights, moments and step count as they were
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        skipped += bad
        steps, images = steps + 1, images + len(x)
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + value.detach().float()
    if hasattr(inner, "found_inf"):
        del inner.found_inf
    skipped_steps = int(skipped.item())
    if steps and skipped_steps == steps:
        raise FloatingPointError(
            f"every step of the epoch had a non-finite loss or gradient ({steps} steps); "
            "lower train.lr or check the data"
        )
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FloatingPointError("the weights became non-finite; lower train.lr (nothing was exported from this epoch)")
    elapsed = time.perf_counter() - start
    return {
        **{key: float(value) / max(1, steps) for key, value in totals.items()},
        "skipped_steps": skipped_steps,
        "images_per_second": images * accelerator.num_processes / elapsed,
        "lr": scheduler.get_last_lr()[0],
    }


@torch.inference_mode()
def predict_loader(model, loader, accelerator: Accelerator, prep: Preprocessing) -> tuple[np.ndarray, ...]:
    """(part_logits [N, 7], anomaly_logits [N, 7], pooled features [N, F], style features [N, D]) in dataset
    order, on all ranks; the features feed the out-of-distribution score."""
    model.eval()
    net = accelerator.unwrap_model(model)  # no gradients here, so DDP's wrapper adds nothing
    stores: tuple[list, ...] = ([], [], [], [], [])
    with StageStatistics(net.backbone) as stages:
        for batch in tqdm(loader, desc="eval", disable=not accelerator.is_local_main_process, leave=False):
            with accelerator.autocast():
                features = net.backbone(normalize(batch["image"], prep))
                out = net.heads(features)
            gathered = accelerator.gather_for_metrics(
                (
                    out.part_logits.float(),
                    out.anomaly_logits.float(),
                    features.float(),
                    stages.features(),
                    batch["index"],
                )
            )
            for store, value in zip(stores, gathered):
                store.append(value.cpu())
    order = torch.cat(stores[-1]).argsort()
    return tuple(torch.cat(store)[order].numpy() for store in stores[:-1])


def evaluate(model, loader, accelerator: Accelerator, prep: Preprocessing, table, calibration: Calibration):
    """Metrics of both gates on ``table``; returns (metrics, part_logits, anomaly_logits, OodFeatures)."""
    part_logits, anomaly_logits, pooled, style = predict_loader(model, loader, accelerator, prep)
    if not (np.isfinite(part_logits).all() and np.isfinite(anomaly_logits).all()):
        raise FloatingPointError("the model produced non-finite outputs on the val split; lower train.lr")
    part_probs = torch.softmax(torch.from_numpy(part_logits), dim=1).numpy()
    metrics, _ = compute_metrics(table, part_probs, anomaly_logits, calibration)
    return metrics, part_logits, anomaly_logits, OodFeatures(torch.from_numpy(pooled), torch.from_numpy(style))


def fit(cfg: Config, accelerator: Accelerator, resume: bool = False) -> dict:
    """Train, evaluate every ``train.eval_every`` epochs, keep the best by predicted-gate study kappa, export it;
    returns metrics.json."""
    if cfg.train.eval_every < 1:
        raise ValueError(f"train.eval_every must be at least 1, got {cfg.train.eval_every}")
    set_seed(cfg.train.seed)
    _share_cpu_cores(accelerator)
    on_cuda = accelerator.device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    accelerator.wait_for_everyone()
    train, val = prepare_data(cfg, accelerator)
    model = start_from_checkpoint(cfg) if cfg.model.init_from else build_model(cfg.model)
    prep = resolve_preprocessing(model.backbone, cfg.data.image_size)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        model.compile()  # in place: state_dict keys stay those of the plain model
    train_loader, val_loader = build_dataloaders(cfg, train, val, pin_memory=on_cuda)
    lr = scaled_lr(cfg, accelerator.num_processes)
    optimizer, scheduler = build_optimizer(model, cfg, len(train_loader), lr)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    logger.info(
        f"{accelerator.num_processes} process(es), global batch {cfg.train.batch_size * accelerator.num_processes}, "
        f"lr {lr:.3g} (train.lr {cfg.train.lr:.3g}, scaling {cfg.train.lr_scaling})",
        main_process_only=True,
    )
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if resume and (state := latest_state(out / "state")) is not None:
        accelerator.load_state(str(state))
        logger.info(f"resumed from {state} (epoch {progress.epoch})", main_process_only=True)
    augment = DeviceAugment(cfg.train.augment, cfg.data.image_size, cfg.train.seed)
    class_weights = mura_class_weights(train.table)
    log_file = out / "log.jsonl"
    start_epoch = progress.epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        train_loader.set_epoch(epoch)  # the seedable sampler's order depends on (seed, epoch) only
        step = StepContext(cfg, prep, class_weights, augment, epoch)
        train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, accelerator, step)
        stopping = cfg.train.stop_after_epochs is not None and epoch + 1 - start_epoch >= cfg.train.stop_after_epochs
        last = epoch + 1 == cfg.train.epochs
        record = {"epoch": epoch, **{f"train/{k}": v for k, v in train_stats.items()}}
        if (epoch + 1) % cfg.train.eval_every == 0 or last:
            sync_buffers(model, accelerator)  # one set of BatchNorm statistics for evaluation and export
            metrics, part_logits, anomaly_logits, features = evaluate(
                model, val_loader, accelerator, prep, val.table, Calibration()
            )
            kappa = metrics["predicted_gate"]["overall"]["study_kappa"]
            record.update(
                {
                    "val/study_kappa": kappa,
                    "val/study_auroc": metrics["predicted_gate"]["overall"]["study_auroc"],
                    "val/part_accuracy": metrics["part_accuracy"],
                }
            )
            if kappa is not None and kappa > progress.best_kappa:
                progress.best_kappa, progress.best_epoch = kappa, epoch
                if accelerator.is_main_process:
                    net = accelerator.unwrap_model(model)
                    export_best(cfg, net, prep, val, part_logits, anomaly_logits, features)
        accelerator.log(record, step=epoch)
        progress.history.append(record)
        if accelerator.is_main_process:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        progress.epoch = epoch + 1
        if (epoch + 1) % cfg.train.eval_every == 0 or last or stopping:
            save_state(accelerator, out / "state", epoch)
        if stopping:
            logger.info(f"stopping after epoch {epoch} as asked; continue with --resume", main_process_only=True)
            break
    sync_buffers(model, accelerator)
    summary = _summary(progress, accelerator, model)
    if accelerator.is_main_process:
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


def sync_buffers(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks.

    DDP broadcasts buffers from rank 0 at each training forward, but every rank then updates its own copy, so
    after the last step the ranks hold different statistics; evaluation and export need one (timm's
    ``distribute_bn`` with reduce=True does the same).
    """
    if accelerator.num_processes == 1:
        return
    for buffer in accelerator.unwrap_model(model).buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
            buffer.div_(accelerator.num_processes)


def _summary(progress: Progress, accelerator: Accelerator, model) -> dict:
    """metrics.json: best epoch and history, plus proof that every rank ended with the same weights and buffers."""
    state = accelerator.unwrap_model(model).state_dict()
    checksum = torch.stack([v.detach().double().sum() for v in state.values() if v.is_floating_point()]).sum().view(1)
    checksums = accelerator.gather(checksum.to(accelerator.device)).cpu().tolist()
    return {
        "best_epoch": progress.best_epoch,
        "best_val_study_kappa": progress.best_kappa,
        "world_size": accelerator.num_processes,
        "rank_param_checksums": checksums,  # parameters and floating-point buffers
        "history": progress.history,
    }


def _share_cpu_cores(accelerator: Accelerator) -> None:
    """`accelerate launch` sets OMP_NUM_THREADS=1 for every process, which leaves most cores of a CPU-only run
    idle (measured: 35 vs 54 img/s on 2 cores). Give each local process its share of the cores instead."""
    if accelerator.device.type != "cpu" or torch.get_num_threads() != 1:
        return
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    threads = max(1, (os.cpu_count() or 1) // local_processes)
    if threads > 1:
        torch.set_num_threads(threads)
        logger.info(f"using {threads} CPU threads per process", main_process_only=True)
