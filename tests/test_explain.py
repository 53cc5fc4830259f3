"""Grad-CAM: contract, no NaN, one forward, no leaked hooks, no weight gradients, other backbones."""

import gc
import resource

import numpy as np
import pytest
import torch
from PIL import Image

from mura_mt.inference.explain import gradcam, gradcam_with_output, overlay
from mura_mt.model import MultiTaskNet, select_anomaly_logit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiTaskNet("resnet18").eval().requires_grad_(False)


def test_gradcam_contract(model):
    x = torch.randn(2, 3, 96, 128)
    maps = gradcam(model, x, torch.tensor([1, 5]))
    assert maps.shape == (2, 1, 96, 128)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2))


def test_map_targets_the_gated_head(model):
    x = torch.randn(1, 3, 96, 96)
    assert not torch.allclose(gradcam(model, x, 0), gradcam(model, x, 6))
    assert not torch.allclose(gradcam(model, x, 2, target="part"), gradcam(model, x, 2))


def test_all_negative_evidence_gives_a_zero_map_not_nan():
    net = MultiTaskNet("resnet18").eval().requires_grad_(False)
    with torch.no_grad():
        net.anomaly_head.weight.fill_(-1.0)  # every channel argues against: ReLU leaves nothing
    maps = gradcam(net, torch.rand(1, 3, 64, 64), 3)
    assert torch.equal(maps, torch.zeros_like(maps))


def test_one_forward_serves_prediction_and_map(model):
    calls = []
    handle = model.backbone.register_forward_hook(lambda *args: calls.append(1))
    try:
        x = torch.randn(2, 3, 64, 64)
        maps, out, part_idx, features = gradcam_with_output(model, x, lambda o: o.part_logits.argmax(1))
    finally:
        handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        reference = model(x)
    assert torch.allclose(out.anomaly_logits, reference.anomaly_logits, atol=1e-5)
    assert torch.equal(part_idx, reference.part_logits.argmax(1))
    assert features.shape == (2, model.backbone.num_features)
    assert all(p.grad is None for p in model.parameters())  # no weight gradients were computed


def test_no_hook_or_memory_leak_over_many_calls(model):
    x = torch.randn(1, 3, 64, 64)
    for _ in range(20):
        gradcam(model, x, 2)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300):
        gradcam(model, x, 2)
    gc.collect()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not model.cam_layer._forward_hooks and not model.cam_layer._backward_hooks
    assert grown_mb < 50, grown_mb


def test_other_backbone_uses_its_last_stage():
    net = MultiTaskNet("mobilenetv3_small_050").eval().requires_grad_(False)
    maps = gradcam(net, torch.randn(1, 3, 96, 96), 4)
    assert maps.shape == (1, 1, 96, 96) and torch.isfinite(maps).all()


def test_overlay_is_rgb_of_the_image_size():
    image = Image.fromarray(np.full((40, 60), 100, np.uint8))
    heat = np.zeros((40, 60))
    heat[:10, :10] = 1.0
    out = overlay(image, heat)
    assert out.mode == "RGB" and out.size == (60, 40)
    arr = np.asarray(out).astype(int)
    assert (arr[30, 50] == 100).all()  # cold pixels keep the radiograph
    assert abs(arr[0, 0, 0] - arr[0, 0, 2]) > 20  # hot pixels are coloured
    with pytest.raises(ValueError):
        overlay(image, np.zeros((10, 10)))


def test_gate_helper_matches_indexing():
    logits = torch.randn(5, 7)
    idx = torch.tensor([0, 6, 3, 3, 1])
    assert torch.equal(select_anomaly_logit(logits, idx), logits[torch.arange(5), idx])
