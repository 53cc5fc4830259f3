"""MultiTaskNet: one timm backbone, a 7-way body-part head and seven anomaly heads, and the gate.

The seven anomaly heads are one ``Linear(F, 7)``: column k IS the head of BODY_PARTS[k]. The gate is
``select_anomaly_logit``: training passes the true part (teacher forcing), inference the predicted or the
user-given part. This module knows nothing about data loading, losses or serving.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mura_mt.config import ModelConfig
from mura_mt.labels import BODY_PARTS


class ModelOutput(NamedTuple):
    part_logits: torch.Tensor  # [B, 7]
    anomaly_logits: torch.Tensor  # [B, 7], column k = anomaly head of body part k


class MultiTaskNet(nn.Module):
    """Shared backbone + body-part head + anomaly heads."""

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        import timm  # here: timm brings torchvision and torch._dynamo (1.3 s), which an int8 server never needs

        overlay = {"pretrained_cfg_overlay": {"file": pretrained_file}} if pretrained_file else {}
        self.backbone = timm.create_model(
            backbone, pretrained=pretrained or bool(pretrained_file), num_classes=0, drop_rate=drop_rate, **overlay
        )
        # Pooled width: MobileNet-style models add a conv head after the last stage (head_hidden_size).
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.part_head = nn.Linear(features, len(BODY_PARTS))
        self.anomaly_head = nn.Linear(features, len(BODY_PARTS))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.heads(self.backbone(x))

    def heads(self, features: torch.Tensor) -> ModelOutput:
        """Both heads on pooled backbone features [B, F] (the Predictor also keeps the features)."""
        return ModelOutput(self.part_head(features), self.anomaly_head(features))

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional stage: ``layer4`` for ResNets, timm's last feature module otherwise."""
        if hasattr(self.backbone, "layer4"):
            return self.backbone.layer4
        last = self.backbone.feature_info[-1]["module"]
        return self.backbone.get_submodule(last)


def build_model(cfg: ModelConfig) -> MultiTaskNet:
    """Build the network described by the model config."""
    return MultiTaskNet(cfg.backbone, cfg.pretrained, cfg.pretrained_file, cfg.drop_rate)


def select_anomaly_logit(anomaly_logits: torch.Tensor, part_idx: torch.Tensor) -> torch.Tensor:
    """The gate: for each row b take ``anomaly_logits[b, part_idx[b]]`` -> [B]."""
    return anomaly_logits.gather(1, part_idx.long().view(-1, 1)).squeeze(1)
