import pytest
import torch

from mura_mt.labels import BODY_PARTS
from mura_mt.model import ModelOutput, MultiTaskNet, select_anomaly_logit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiTaskNet("resnet18", pretrained=False)


def test_output_shapes_and_named_tuple(model):
    out = model(torch.randn(3, 3, 64, 64))
    assert isinstance(out, ModelOutput)
    assert out.part_logits.shape == (3, len(BODY_PARTS)) and out.anomaly_logits.shape == (3, len(BODY_PARTS))
    assert model.cam_layer is model.backbone.layer4


def test_gate_takes_the_chosen_column():
    logits = torch.arange(14.0).view(2, 7)
    assert select_anomaly_logit(logits, torch.tensor([3, 6])).tolist() == [3.0, 13.0]


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", pretrained=False)
    for module in model.modules():  # timm zero-inits each block's last BN gamma, which blocks grads at init
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    out = model(torch.randn(2, 3, 64, 64))
    # a plain sum is blind through train-mode BatchNorm (batch-centred outputs sum to a constant)
    (out.part_logits.pow(2).sum() + out.anomaly_logits.pow(2).sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_anomaly_column_k_gets_gradient_only_from_part_k_samples(model):
    from mura_mt.training.losses import multitask_loss

    model.zero_grad()
    parts = torch.tensor([1, 1, 4, 6])
    out = model(torch.randn(4, 3, 64, 64))
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    multitask_loss(out, parts, labels, torch.full((7, 2), 0.5), part_weight=0.0)["loss"].backward()
    row_grad = model.anomaly_head.weight.grad.abs().sum(dim=1)  # [7]: one row per head
    for k in range(len(BODY_PARTS)):
        assert (row_grad[k] > 0) == (k in parts.tolist()), BODY_PARTS[k]


def test_another_timm_cnn_works_as_backbone():
    model = MultiTaskNet("mobilenetv3_small_050", pretrained=False)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.anomaly_logits.shape == (2, 7)
    assert model.cam_layer is model.backbone.get_submodule(model.backbone.feature_info[-1]["module"])


def test_local_weights_file_is_used(tmp_path):
    """pretrained_file loads a local backbone checkpoint offline (the real recipe uses the hub instead)."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False, num_classes=0)
    save_file(source.state_dict(), tmp_path / "resnet18.safetensors")
    model = MultiTaskNet("resnet18", pretrained_file=str(tmp_path / "resnet18.safetensors"))
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
