"""mura-mt: one multi-task ResNet-18 for bone X-ray triage on the seven MURA body parts.

The public surface lives here; heavy modules (torch, timm, captum) load on first use of a name that needs them.
The package is grouped by concern, and imports run one way (README "Layout"; tests/test_layout.py holds it):
``labels``, ``config``, ``hardware``, ``model`` -> ``imaging``, ``data`` -> ``inference`` -> ``evaluation``,
``training``, ``dicom_node``, ``web`` -> ``app.py`` and ``scripts/``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from mura_mt.config import Config, load_config
from mura_mt.labels import BODY_PARTS

__all__ = [
    "BODY_PARTS",
    "Config",
    "InvalidImageError",
    "MultiTaskNet",
    "Prediction",
    "Predictor",
    "StudyPrediction",
    "load_config",
    "load_radiograph",
    "rule_in_threshold",
    "rule_out_threshold",
]

if TYPE_CHECKING:
    from mura_mt.imaging.io import InvalidImageError, load_radiograph
    from mura_mt.inference.operating_points import rule_in_threshold, rule_out_threshold
    from mura_mt.inference.predictor import Prediction, Predictor, StudyPrediction
    from mura_mt.model import MultiTaskNet

# name -> the module that owns it, imported on first use
_LAZY = {
    "MultiTaskNet": "mura_mt.model",
    "Predictor": "mura_mt.inference.predictor",
    "Prediction": "mura_mt.inference.predictor",
    "StudyPrediction": "mura_mt.inference.predictor",
    "load_radiograph": "mura_mt.imaging.io",
    "InvalidImageError": "mura_mt.imaging.io",
    "rule_out_threshold": "mura_mt.inference.operating_points",
    "rule_in_threshold": "mura_mt.inference.operating_points",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mura_mt' has no attribute {name!r}")
