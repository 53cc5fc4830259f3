"""Training augmentation as batched tensor ops on the training device; never used for serving.

DataLoader workers only slice the uint8 cache; the whole batch is then augmented where the model runs:
one affine matrix per sample (resized crop, horizontal flip, rotation) through a single
``affine_grid``/``grid_sample``, then brightness and contrast broadcast over the batch. The distribution is
the one ``torchvision.transforms.v2`` gave per sample before (RandomResizedCrop -> RandomHorizontalFlip ->
RandomRotation -> ColorJitter in random order), so recipes keep their meaning (tests/test_augment.py checks it).

Every random number is a pure function of (seed, epoch, sample index), computed where the batch is by a
counter-based hash: no host sync, and no generator state in workers or on the device, so a resumed run draws
exactly what an uninterrupted one would, with any number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mura_mt.config import AugmentConfig

_CROP_TRIES = 10  # as torchvision's RandomResizedCrop: then it falls back to the whole image
_N_UNIFORMS = 2 * _CROP_TRIES + 2 * _CROP_TRIES + 5  # area, log-ratio, x, y per try; flip, angle, b, c, order


def _u64(value: int) -> int:
    """A 64-bit constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def uniforms(seed: int, epoch: int, indices: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] float64 in [0, 1) on ``indices``' device: splitmix64 of a counter built from (seed, epoch, index,
    column). int64 products wrap modulo 2**64 on every backend, which is the arithmetic splitmix64 needs."""
    base = _u64((seed * 0x9E3779B97F4A7C15 ^ epoch * 0xC2B2AE3D27D4EB4F) % (1 << 64))
    columns = torch.arange(n, dtype=torch.int64, device=indices.device) * _u64(0x27D4EB2F165667C5)
    z = (indices.long()[:, None] * _u64(0x165667B19E3779F9) ^ base) + columns[None, :] + _u64(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _u64(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _u64(0x94D049BB133111EB)
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 11).double() / float(1 << 53)


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters, [B] tensors: crop centre and half-extent (in [-1, 1] image units), flip (+-1),
    rotation angle, brightness and contrast factors, and whether contrast comes before brightness."""

    centre_x: torch.Tensor
    centre_y: torch.Tensor
    half_w: torch.Tensor
    half_h: torch.Tensor
    flip_sign: torch.Tensor
    angle_rad: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    contrast_first: torch.Tensor


def sample_params(cfg: AugmentConfig, size: int, seed: int, epoch: int, indices: torch.Tensor) -> AugmentParams:
    """Draw the augmentation of each sample ``indices[b]`` in ``epoch`` as torchvision would, on their device."""
    u = uniforms(seed, epoch, indices, _N_UNIFORMS)
    t = _CROP_TRIES
    area = size * size * (cfg.crop_scale_min + (1.0 - cfg.crop_scale_min) * u[:, :t])
    ratio = torch.exp(math.log(0.9) + (math.log(1.1) - math.log(0.9)) * u[:, t : 2 * t])
    w, h = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))
    valid = (w > 0) & (h > 0) & (w <= size) & (h <= size)
    first = valid.double().argmax(dim=1, keepdim=True)  # the first try that fits, as torchvision
    found = valid.any(dim=1)
    pick = lambda a: a.gather(1, first)[:, 0]  # noqa: E731
    w, h = torch.where(found, pick(w), size), torch.where(found, pick(h), size)
    # Integer top-left corner, uniform over the positions where the crop fits (torchvision's randint).
    left = torch.where(found, torch.floor(pick(u[:, 2 * t : 3 * t]) * (size - w + 1)), 0)
    top = torch.where(found, torch.floor(pick(u[:, 3 * t : 4 * t]) * (size - h + 1)), 0)
    extra = u[:, 4 * t :].float()
    flip = (extra[:, 0] < 0.5) & cfg.hflip
    return AugmentParams(
        centre_x=((2 * left + w) / size - 1).float(),
        centre_y=((2 * top + h) / size - 1).float(),
        half_w=(w / size).float(),
        half_h=(h / size).float(),
        flip_sign=1 - 2 * flip.float(),
        angle_rad=torch.deg2rad((2 * extra[:, 1] - 1) * cfg.rotation_degrees),
        brightness=1 + (2 * extra[:, 2] - 1) * cfg.brightness,
        contrast=1 + (2 * extra[:, 3] - 1) * cfg.contrast,
        contrast_first=extra[:, 4] < 0.5,
    )


def augment_batch(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """uint8 or float [B, 1, S, S] on any device -> float [B, 1, S, S] in [0, 255], augmented per sample.

    Order as the per-sample pipeline it replaces: crop+resize, flip, rotate (black corners), intensity.
    """
    batch, _, height, width = images.shape
    cos, sin = torch.cos(params.angle_rad), torch.sin(params.angle_rad)
    zero = torch.zeros_like(cos)
    # Output point p -> point q of the cropped, flipped image before rotation: q = R(-angle) p.
    unrotate = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # [B, 2, 3]
    q = F.affine_grid(unrotate, [batch, 1, height, width], align_corners=False)  # [B, H, W, 2]
    inside = (q.abs() <= 1).all(dim=-1, keepdim=True)  # rotation exposes black corners, as RandomRotation
    scale = torch.stack([params.half_w * params.flip_sign, params.half_h], 1)  # [B, 2]
    centre = torch.stack([params.centre_x, params.centre_y], 1)  # [B, 2]
    grid = q * scale[:, None, None, :] + centre[:, None, None, :]  # crop frame -> source image coordinates
    grid = torch.where(inside, grid, torch.full_like(grid, 4.0))  # far outside the image: zeros padding
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _jitter(x, params.brightness, params.contrast, params.contrast_first)


def _jitter(x: torch.Tensor, brightness, contrast, contrast_first) -> torch.Tensor:
    """ColorJitter's brightness and contrast (clamped to [0, 255] after each), in the sampled order."""
    view = (-1, 1, 1, 1)

    def bright(t):
        return (t * brightness.view(view)).clamp(0, 255)

    def contrast_(t):
        mean = t.mean(dim=(1, 2, 3), keepdim=True)
        return ((t - mean) * contrast.view(view) + mean).clamp(0, 255)

    first = contrast_first.view(view)
    return torch.where(first, bright(contrast_(x)), contrast_(bright(x)))


class DeviceAugment:
    """The training augmentation of one run: ``augment(images, indices, epoch)`` on the batch's device."""

    def __init__(self, cfg: AugmentConfig, size: int, seed: int):
        self.cfg, self.size, self.seed = cfg, size, seed

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        return augment_batch(images, sample_params(self.cfg, self.size, self.seed, epoch, indices))
