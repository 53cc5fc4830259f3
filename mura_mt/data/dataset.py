"""Torch datasets over the prepared-image cache. Knows nothing about files, models or Accelerate.

A batch is fetched with one fancy-index read of the cache (``__getitems__``): workers deliver plain uint8
images and the training device augments them (``mura_mt.data.augment``), so the host side stays a memory copy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mura_mt.labels import PART_TO_IDX


class CachedImages(Dataset):
    """Letterboxed uint8 images with their body part and label.

    A sample is ``{"image": uint8 [1, S, S], "part": int64, "label": float32, "index": int64}``. ``index`` is
    the row of the index table: evaluation maps gathered predictions back to paths and studies with it, and
    training derives each sample's augmentation from it.
    """

    def __init__(self, images: np.ndarray, table: pd.DataFrame):
        if "cache_row" not in table and len(images) != len(table):
            raise ValueError(f"{len(images)} cached images for {len(table)} index rows")
        self.images = images
        self.rows = table["cache_row"].to_numpy() if "cache_row" in table else np.arange(len(table))
        self.parts = torch.tensor([PART_TO_IDX[p] for p in table["body_part"]], dtype=torch.long)
        self.labels = torch.tensor(table["label"].to_numpy(), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one read of the cache (the DataLoader calls this instead of collating samples)."""
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")  # ascending reads from the memory map, then back in batch order
        images = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        images[order] = self.images[rows[order]]
        index = torch.from_numpy(idx)
        return {
            "image": torch.from_numpy(images),
            "part": self.parts[index],
            "label": self.labels[index],
            "index": index,
        }


def batch_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CachedImages.__getitems__`` already returns a collated batch; the DataLoader must not stack it again."""
    return batch
