"""THE serving preprocessing: the only module that knows image size, padding, channel handling, mean and std.

An image becomes model input in two steps, each with one owner here:
    ``letterbox``: grayscale PIL image -> uint8 tensor [1, S, S] (longest side resized to S, centred on black)
    ``normalize``: uint8 [B, 1, S, S] -> float [B, 3, S, S] with the backbone's mean and std
``eval_transform`` is exactly the two in sequence; the training and validation loaders store letterboxed
uint8 images in a cache and call ``normalize`` on the device, so validation and serving see identical tensors.
``Geometry`` records the letterbox so Grad-CAM maps can be put back on the original image.
Training augmentation is not here (``mura_mt.data.augment``): serving imports neither it nor pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects: square side and per-channel normalisation (3 channels, grey replicated)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Where an original image lies inside the letterboxed square."""

    width: int
    height: int
    left: int
    top: int
    inner_width: int
    inner_height: int


def resolve_preprocessing(backbone: torch.nn.Module, image_size: int) -> Preprocessing:
    """Mean and std from timm's data config of the backbone, at our own square size."""
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(backbone)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return Preprocessing(image_size=image_size, mean=mean, std=std)


def letterbox(image: Image.Image, size: int) -> tuple[torch.Tensor, Geometry]:
    """Resize the longest side to ``size`` (keeping aspect) and centre on a black square; uint8 [1, S, S]."""
    if image.mode != "L":
        raise ValueError(f"letterbox expects a grayscale (L) image, got mode {image.mode}")
    width, height = image.size
    scale = size / max(width, height)
    inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image.resize((inner_w, inner_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (size - inner_w) // 2, (size - inner_h) // 2
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[top : top + inner_h, left : left + inner_w] = np.asarray(resized)
    return torch.from_numpy(canvas)[None], Geometry(width, height, left, top, inner_w, inner_h)


def normalize(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 [B, 1, S, S] -> float32 [B, 3, S, S], grey replicated, then (x - mean) / std per channel."""
    mean = torch.tensor(prep.mean, device=images.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.float().expand(-1, 3, -1, -1) - mean) / std


def eval_transform(image: Image.Image, prep: Preprocessing) -> tuple[torch.Tensor, Geometry]:
    """The evaluation/serving transform: letterbox + normalize -> float [1, 3, S, S] and its geometry."""
    pixels, geometry = letterbox(image, prep.image_size)
    return normalize(pixels[None], prep), geometry


def unletterbox(maps: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Map [..., S, S] maps (e.g. Grad-CAM) back to the original image: crop the padding, resize bilinearly."""
    inner = maps[
        ..., geometry.top : geometry.top + geometry.inner_height, geometry.left : geometry.left + geometry.inner_width
    ]
    flat = inner.reshape(-1, 1, *inner.shape[-2:]).float()
    resized = F.interpolate(flat, size=(geometry.height, geometry.width), mode="bilinear", align_corners=False)
    return resized.reshape(*maps.shape[:-2], geometry.height, geometry.width)
