"""From a config to train/val tables and their decoded images: the one place that knows data.kind.

Runs under Accelerate: the main process generates synthetic data first; the image cache is built once per
machine by its local main process while the other local processes wait for the file (see ``data/cache.py``),
so several machines without a shared filesystem each build their own. Unreadable images are quarantined
(listed in OUTPUT_DIR/quarantine.json and logged with their count) up to ``data.max_bad_images``; above that
the run stops with the list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from accelerate import Accelerator
from accelerate.logging import get_logger

from mura_mt.config import Config
from mura_mt.data.cache import build_image_cache, default_cache_dir, wait_for_image_cache
from mura_mt.data.index import MuraIndexError, read_csv_index, read_mura_index, split_by_patient

logger = get_logger(__name__)


@dataclass
class SplitData:
    """An index table (with a ``cache_row`` column) and the cached images it points into."""

    table: pd.DataFrame
    images: np.ndarray


def data_root(cfg: Config) -> Path:
    """Where the data lives; synthetic data defaults to ``data/synthetic``."""
    if cfg.data.root:
        return Path(cfg.data.root).expanduser()
    if cfg.data.kind == "synthetic":
        return Path("data/synthetic")
    raise MuraIndexError(f"data.root is not set (data.kind={cfg.data.kind}); pass data.root=/path/to/MURA-v1.1")


def read_index(cfg: Config, split: str) -> pd.DataFrame:
    """The full table of an official split ('train' or 'valid'), whatever the data kind."""
    root = data_root(cfg)
    if cfg.data.kind in ("mura", "synthetic"):
        return read_mura_index(root, split)
    if cfg.data.kind == "csv":
        if split == "train":
            return read_csv_index(root)
        if not cfg.data.test_csv:
            raise MuraIndexError("data.kind=csv has no test split: set data.test_csv")
        return read_csv_index(cfg.data.test_csv)
    raise MuraIndexError(f"unknown data.kind {cfg.data.kind!r}; use mura, synthetic or csv")


def ensure_synthetic(cfg: Config, accelerator: Accelerator) -> None:
    """Generate the synthetic tree once (main process) if data.kind is synthetic and it is missing."""
    if cfg.data.kind != "synthetic":
        return
    root = data_root(cfg)
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (root / "MURA-v1.1" / "valid_labeled_studies.csv").exists():
            from mura_mt.data.synthetic import make_synthetic_mura

            syn = cfg.data.synthetic
            logger.info(f"generating synthetic MURA at {root}", main_process_only=True)
            make_synthetic_mura(root, syn.studies_per_part, syn.valid_studies_per_part, syn.seed, progress=True)


def load_split_data(cfg: Config, table: pd.DataFrame, accelerator: Accelerator, name: str) -> SplitData:
    """Decode (or reuse) the cache for ``table`` and quarantine unreadable images."""
    cache_dir = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    paths, size = table["path"].tolist(), cfg.data.image_size
    if accelerator.is_local_main_process:
        images, failures = build_image_cache(paths, size, cache_dir, progress=True)
    else:
        images, failures = wait_for_image_cache(paths, size, cache_dir, timeout_s=cfg.data.cache_wait_minutes * 60)
    table = table.assign(cache_row=np.arange(len(table)))
    if failures:
        report = Path(cfg.output_dir) / f"quarantine-{name}.json"
        if accelerator.is_main_process:
            report.write_text(json.dumps(failures, indent=1))
        first = "; ".join(f"{p}: {why}" for p, why in list(failures.items())[:5])
        if len(failures) > cfg.data.max_bad_images:
            raise MuraIndexError(
                f"{len(failures)} unreadable images in the {name} split (limit data.max_bad_images="
                f"{cfg.data.max_bad_images}); listed in {report}. First: {first}"
            )
        logger.warning(
            f"quarantined {len(failures)} unreadable {name} images (listed in {report})", main_process_only=True
        )
        table = table[~table["path"].isin(failures)].reset_index(drop=True)
    return SplitData(table, images)


def prepare_data(cfg: Config, accelerator: Accelerator) -> tuple[SplitData, SplitData]:
    """Train and val data: a patient-grouped split of the official train set (valid stays the test set)."""
    ensure_synthetic(cfg, accelerator)
    train_table, val_table = split_by_patient(read_index(cfg, "train"), cfg.data.val_fraction, cfg.data.split_seed)
    overlap = set(train_table["patient_id"]) & set(val_table["patient_id"])
    assert not overlap, f"patient split leaked {len(overlap)} patients"  # split_by_patient guarantees this
    return load_split_data(cfg, train_table, accelerator, "train"), load_split_data(cfg, val_table, accelerator, "val")
