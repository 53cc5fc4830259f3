"""Device-side augmentation: the same distribution as the per-sample torchvision pipeline it replaced, drawn as
a pure function of (seed, epoch, sample), and a loader whose workers only slice the cache."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ks_2samp
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mura_mt.config import AugmentConfig
from mura_mt.data.augment import DeviceAugment, augment_batch, sample_params, uniforms
from mura_mt.data.dataset import CachedImages, batch_collate
from mura_mt.labels import BODY_PARTS

SIZE = 64
DRAWS = 600


def _reference_pipeline(cfg: AugmentConfig) -> v2.Compose:
    """The per-sample torchvision v2 pipeline of the previous release (what recipes were tuned with)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(SIZE, scale=(cfg.crop_scale_min, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR),
            v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast),
        ]
    )


def _bone_like_image() -> torch.Tensor:
    """uint8 [1, S, S]: a bright off-centre bar on a mid-grey field, so crop, flip and rotation all show."""
    image = torch.full((1, SIZE, SIZE), 90, dtype=torch.uint8)
    image[:, 10:54, 14:26] = 220
    return image


def _statistics(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image summaries that each augmentation moves: intensity, black corners, where the bar lies."""
    x = images.float().reshape(len(images), SIZE, SIZE)
    bright = (x > 150).float()
    cols = torch.arange(SIZE, dtype=torch.float32)
    centroid_x = (bright.sum(1) * cols).sum(1) / bright.sum((1, 2)).clamp(min=1)
    return {
        "mean": x.mean((1, 2)).numpy(),
        "std": x.std(dim=(1, 2)).numpy(),
        "black_fraction": (x < 5).float().mean((1, 2)).numpy(),
        "bar_centroid_x": centroid_x.numpy(),
    }


def _ours(cfg: AugmentConfig, seed: int = 0) -> torch.Tensor:
    images = _bone_like_image()[None].expand(DRAWS, -1, -1, -1)
    return augment_batch(images, sample_params(cfg, SIZE, seed, 0, torch.arange(DRAWS)))


def test_same_distribution_as_the_torchvision_pipeline():
    cfg = AugmentConfig()
    torch.manual_seed(0)
    reference = _reference_pipeline(cfg)
    theirs = torch.stack([reference(_bone_like_image()) for _ in range(DRAWS)])
    ours, ref = _statistics(_ours(cfg)), _statistics(theirs)
    for name in ours:
        result = ks_2samp(ours[name], ref[name])
        assert result.pvalue > 1e-3, f"{name}: KS statistic {result.statistic:.3f}, p {result.pvalue:.2g}"


def test_the_distribution_check_notices_a_missing_augmentation():
    """The KS comparison above must be able to fail: without rotation the black corners are gone."""
    torch.manual_seed(0)
    theirs = torch.stack([_reference_pipeline(AugmentConfig())(_bone_like_image()) for _ in range(DRAWS)])
    no_rotation = _ours(AugmentConfig(rotation_degrees=0.0))
    assert ks_2samp(_statistics(no_rotation)["black_fraction"], _statistics(theirs)["black_fraction"]).pvalue < 1e-6


def test_parameters_are_a_function_of_seed_epoch_and_sample_alone():
    indices = torch.tensor([5, 17, 3, 900])
    whole = uniforms(seed=1, epoch=2, indices=indices, n=6)
    alone = torch.cat([uniforms(1, 2, indices[i : i + 1], 6) for i in range(len(indices))])
    assert torch.equal(whole, alone)  # batch composition and order do not matter
    assert not torch.equal(whole, uniforms(1, 3, indices, 6))  # a new epoch draws anew
    assert not torch.equal(whole, uniforms(2, 2, indices, 6))
    values = uniforms(0, 0, torch.arange(20000), 4)
    assert 0.0 <= float(values.min()) and float(values.max()) < 1.0
    assert abs(float(values.mean()) - 0.5) < 0.01  # uniform, not just bounded


def test_no_augmentation_is_the_identity():
    cfg = AugmentConfig(rotation_degrees=0.0, hflip=False, brightness=0.0, contrast=0.0, crop_scale_min=1.0)
    images = torch.randint(0, 256, (16, 1, SIZE, SIZE), dtype=torch.uint8)
    out = augment_batch(images, sample_params(cfg, SIZE, 0, 0, torch.arange(16)))
    # Every crop that fits at scale 1 is the whole image (aspect drawn in [0.9, 1.1] only fits at ~1).
    assert torch.allclose(out, images.float(), atol=1e-3)


def test_flip_mirrors_exactly():
    cfg = AugmentConfig(rotation_degrees=0.0, brightness=0.0, contrast=0.0, crop_scale_min=1.0)
    images = torch.randint(0, 256, (64, 1, SIZE, SIZE), dtype=torch.uint8)
    params = sample_params(cfg, SIZE, 0, 0, torch.arange(64))
    out = augment_batch(images, params)
    flipped = params.flip_sign < 0
    assert 10 < int(flipped.sum()) < 54
    assert torch.allclose(out[flipped], images[flipped].flip(-1).float(), atol=1e-3)
    assert torch.allclose(out[~flipped], images[~flipped].float(), atol=1e-3)


def test_device_augment_keeps_dtype_range_and_shape():
    augment = DeviceAugment(AugmentConfig(), SIZE, seed=0)
    images = torch.randint(0, 256, (8, 1, SIZE, SIZE), dtype=torch.uint8)
    out = augment(images, torch.arange(8), epoch=0)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert torch.equal(out, augment(images, torch.arange(8), epoch=0))
    assert not torch.equal(out, augment(images, torch.arange(8), epoch=1))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_are_slices_of_the_cache(workers):
    n = 37
    images = np.random.default_rng(0).integers(0, 256, (n + 5, 1, 8, 8), dtype=np.uint8)
    table = pd.DataFrame(
        {"body_part": [BODY_PARTS[i % 7] for i in range(n)], "label": [i % 2 for i in range(n)]}
    ).assign(cache_row=np.arange(5, n + 5))  # rows of the cache need not start at 0
    loader = DataLoader(
        CachedImages(images, table),
        batch_size=8,
        shuffle=True,
        num_workers=workers,
        collate_fn=batch_collate,
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (1, 8, 8)
        index = batch["index"].numpy()
        assert np.array_equal(batch["image"].numpy(), images[index + 5])
        assert torch.equal(batch["label"], torch.tensor(table["label"].to_numpy()[index], dtype=torch.float32))
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(n))
