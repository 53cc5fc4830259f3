import pandas as pd
import pytest
import torch

from mura_mt.model import ModelOutput
from mura_mt.training.losses import multitask_loss, mura_class_weights


def test_class_weights_follow_the_paper():
    table = pd.DataFrame({"body_part": ["wrist"] * 4 + ["hand"] * 5, "label": [1, 0, 0, 0, 1, 1, 1, 1, 0]})
    weights = mura_class_weights(table)
    # wrist: A=1, N=3 -> abnormal weight N/(A+N)=0.75, normal weight A/(A+N)=0.25
    assert weights[6].tolist() == pytest.approx([0.25, 0.75])
    assert weights[3].tolist() == pytest.approx([0.8, 0.2])
    assert weights[0].tolist() == pytest.approx([0.5, 0.5])  # elbow absent


def test_non_selected_heads_do_not_change_the_loss():
    torch.manual_seed(0)
    part_logits, anomaly = torch.randn(4, 7), torch.randn(4, 7)
    parts, labels, weights = torch.tensor([0, 2, 2, 5]), torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.rand(7, 2)
    base = multitask_loss(ModelOutput(part_logits, anomaly), parts, labels, weights)
    changed = anomaly.clone()
    mask = torch.ones_like(changed, dtype=torch.bool)
    mask[torch.arange(4), parts] = False
    changed[mask] += 100.0
    other = multitask_loss(ModelOutput(part_logits, changed), parts, labels, weights)
    assert torch.equal(base["anomaly_loss"], other["anomaly_loss"])
    changed[0, 0] += 1.0  # the selected column does matter
    assert not torch.equal(
        base["anomaly_loss"], multitask_loss(ModelOutput(part_logits, changed), parts, labels, weights)["anomaly_loss"]
    )


def test_loss_matches_hand_computation():
    part_logits, anomaly = torch.zeros(2, 7), torch.zeros(2, 7)
    anomaly[1, 3] = 2.0
    weights = torch.full((7, 2), 0.5)
    weights[3] = torch.tensor([0.2, 0.8])
    losses = multitask_loss(
        ModelOutput(part_logits, anomaly), torch.tensor([0, 3]), torch.tensor([0.0, 1.0]), weights, part_weight=2.0
    )
    expected_bce = (0.5 * torch.log(torch.tensor(2.0)) + 0.8 * torch.nn.functional.softplus(torch.tensor(-2.0))) / 2
    assert losses["anomaly_loss"].item() == pytest.approx(expected_bce.item(), rel=1e-6)
    assert losses["part_loss"].item() == pytest.approx(torch.log(torch.tensor(7.0)).item())
    assert losses["loss"].item() == pytest.approx(2 * losses["part_loss"].item() + expected_bce.item(), rel=1e-6)
