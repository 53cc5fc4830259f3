"""Torch datasets over the prepared-image cache. Knows nothing about files, models or Accelerate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mura_mt.labels import PART_TO_IDX


class CachedImages(Dataset):
    """Letterboxed uint8 images with their body part and label.

    A sample is ``{"image": uint8 [1, S, S], "part": int64, "label": float32, "index": int64}``. ``index`` is
    the row of the index table, so evaluation can map gathered predictions back to paths and studies without
    moving strings between processes.
    """

    def __init__(self, images: np.ndarray, table: pd.DataFrame, augment: Callable | None = None):
        if "cache_row" not in table and len(images) != len(table):
            raise ValueError(f"{len(images)} cached images for {len(table)} index rows")
        self.images = images
        self.rows = table["cache_row"].to_numpy() if "cache_row" in table else np.arange(len(table))
        self.parts = torch.tensor([PART_TO_IDX[p] for p in table["body_part"]], dtype=torch.long)
        self.labels = torch.tensor(table["label"].to_numpy(), dtype=torch.float32)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[self.rows[i]]))  # copy out of the memory map
        if self.augment is not None:
            image = self.augment(image)
        return {"image": image, "part": self.parts[i], "label": self.labels[i], "index": torch.tensor(i)}
