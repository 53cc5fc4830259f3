"""What serving needs from a checkpoint, typed: preprocessing, calibration, operating points, warning settings,
and the precision the model runs in. Read once from config.json (``ServingConfig.from_checkpoint``); the Predictor
takes this, never a raw dict. No torch models here, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mura_mt.inference.calibration import Calibration
from mura_mt.hardware import cpu_has_native_bf16
from mura_mt.imaging.preprocessing import Preprocessing
from mura_mt.inference.operating_points import OperatingPoints

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class ServingConfig:
    """The serving side of a checkpoint.

    ``low_part_confidence``: below this body-part probability the answer carries an "uncertain part" warning.
    """

    preprocessing: Preprocessing
    calibration: Calibration = field(default_factory=Calibration)
    low_part_confidence: float = 0.6
    operating_points: OperatingPoints | None = None  # None: answers carry no triage

    @classmethod
    def from_checkpoint(cls, config: dict) -> ServingConfig:
        """From a checkpoint's config.json contents."""
        pre = config["preprocessing"]
        return cls(
            preprocessing=Preprocessing(int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"])),
            calibration=Calibration.from_dict(config["calibration"]),
            low_part_confidence=float(config.get("ood", {}).get("low_part_confidence", 0.6)),
            operating_points=OperatingPoints.from_config(config.get("operating_points")),
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> "bf16" where the hardware computes bf16 natively (CUDA cards that support it; CPUs with
    AVX512-BF16 or AMX), else "fp32". Emulated bf16 would be slower than fp32, so it is never picked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"
