"""Train the multi-task network: accelerate launch scripts/train.py --config CONFIG [--resume] [key=value ...]."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, parse_flag_from_env

from mura_mt.config import load_config
from mura_mt.hardware import describe_cpu, resolve_mixed_precision
from mura_mt.training.loop import fit


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML run config, e.g. configs/mura.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/state (newest complete)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides: data.root=... train.epochs=5 output_dir=...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    precision, why = resolve_mixed_precision(cfg.train.mixed_precision, parse_flag_from_env("ACCELERATE_USE_CPU"))
    accelerator = Accelerator(
        mixed_precision=precision,
        log_with=cfg.train.log_with,
        project_dir=cfg.output_dir,
        # Same seed + epoch -> same batch order on any number of processes, and after --resume.
        # Pinned batches (on CUDA) cross to the device without blocking the host.
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=cfg.train.seed, non_blocking=True
        ),
        # A rank that dies must end the job within minutes, not hang the others forever.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=10))],
    )
    if accelerator.is_main_process:
        logging.info(f"training precision {accelerator.mixed_precision} ({why}); CPU {describe_cpu()}")
    if cfg.train.log_with:
        accelerator.init_trackers("mura-mt")
    summary = fit(cfg, accelerator, resume=args.resume)
    if accelerator.is_main_process:
        print(
            f"best epoch {summary['best_epoch']}: val study kappa {summary['best_val_study_kappa']:.4f} "
            f"-> {cfg.output_dir}/best"
        )
    return summary


if __name__ == "__main__":
    main()
