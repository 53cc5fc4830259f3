"""mura-mt: one multi-task ResNet-18 for bone X-ray triage on the seven MURA body parts.

Public names are re-exported here; heavy modules (torch, timm, captum) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mura_mt.config import Config, load_config
from mura_mt.labels import BODY_PARTS

__all__ = ["BODY_PARTS", "Config", "load_config", "MultiTaskNet", "Predictor", "Prediction", "StudyPrediction"]

if TYPE_CHECKING:
    from mura_mt.model import MultiTaskNet
    from mura_mt.predictor import Prediction, Predictor, StudyPrediction


def __getattr__(name: str):
    if name == "MultiTaskNet":
        from mura_mt.model import MultiTaskNet

        return MultiTaskNet
    if name in ("Predictor", "Prediction", "StudyPrediction"):
        from mura_mt import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'mura_mt' has no attribute {name!r}")
