"""The multi-task loss: body-part cross-entropy + class-weighted BCE on the TRUE part's anomaly head."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from mura_mt.labels import BODY_PARTS
from mura_mt.model import ModelOutput, select_anomaly_logit


def mura_class_weights(table: pd.DataFrame) -> torch.Tensor:
    """The MURA paper's per-part weights from TRAIN images: [7, 2] = (weight of normal, weight of abnormal).

    For part T with A_T abnormal and N_T normal images: abnormal weight N_T / (A_T + N_T), normal weight
    A_T / (A_T + N_T), so the rarer class weighs more. A part missing from the table gets (0.5, 0.5).
    """
    weights = torch.full((len(BODY_PARTS), 2), 0.5)
    for k, part in enumerate(BODY_PARTS):
        labels = table.loc[table["body_part"] == part, "label"]
        if len(labels):
            abnormal = float(labels.sum())
            weights[k] = torch.tensor([abnormal / len(labels), (len(labels) - abnormal) / len(labels)])
    return weights


def multitask_loss(
    out: ModelOutput,
    part: torch.Tensor,
    label: torch.Tensor,
    class_weights: torch.Tensor,
    part_weight: float = 1.0,
    anomaly_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Return ``{"loss", "part_loss", "anomaly_loss"}``.

    Only the true part's anomaly column enters the BCE (teacher-forced gate): the other six heads get no
    gradient from this sample, which is what lets each head specialise on its own body part.
    """
    part_loss = F.cross_entropy(out.part_logits.float(), part)
    gated = select_anomaly_logit(out.anomaly_logits.float(), part)  # [B]
    sample_weight = class_weights.to(gated.device)[part, label.long()]  # [B]
    anomaly_loss = (F.binary_cross_entropy_with_logits(gated, label, reduction="none") * sample_weight).mean()
    loss = part_weight * part_loss + anomaly_weight * anomaly_loss
    return {"loss": loss, "part_loss": part_loss.detach(), "anomaly_loss": anomaly_loss.detach()}
