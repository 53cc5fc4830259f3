"""Grad-CAM on the backbone's last convolutional stage: from the forward pass where the heads allow it, else
with Captum's LayerGradCam; and overlays.

Where the CAM layer's maps A_k reach the heads only through global average pooling and a linear head (every
ResNet), the gradient of a head's logit y with respect to A_k(i, j) is w_k / (h w) everywhere, so Grad-CAM's
channel weights are the head's weights and the map is ReLU(sum_k w_k A_k) up to a positive factor, which the
scaling to [0, 1] removes: no backward pass, in any runtime (``cam_from_forward``). ``pooled_by_average`` checks
that premise on the model itself; every other architecture keeps Captum, which stays the reference.

The target is the GATED anomaly logit: the head of the part that decided (or, as an option, that part's
body-part logit). ``gradcam_with_output`` runs ONE grad-enabled forward that yields both the model output
and the map: the gate is decided inside that forward from its own part logits, so the explanation can never
disagree with the prediction. Gradients flow only from the head back to the CAM layer's output when the
model's parameters are frozen (as in the Predictor). Knows nothing about files, Gradio or calibration.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from mura_mt.model import ModelOutput, MultiTaskNet, select_anomaly_logit

TARGETS = ("anomaly", "part")
PartDecision = Callable[[ModelOutput], torch.Tensor]  # model output -> part_idx [B]


def gradcam_with_output(
    model: MultiTaskNet, x: torch.Tensor, decide_part: PartDecision, target: str = "anomaly"
) -> tuple[torch.Tensor, ModelOutput, torch.Tensor, torch.Tensor]:
    """One forward + backward to the CAM layer.

    Returns:
        (maps [B, 1, H, W] in [0, 1] in the geometry of ``x``, detached model output, part_idx [B],
        detached pooled features [B, F]).
    """
    from captum.attr import LayerAttribution, LayerGradCam  # 0.3 s of import that the forward-pass path never needs

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    seen: dict[str, object] = {}

    def gated_logit(t: torch.Tensor) -> torch.Tensor:
        features = model.backbone(t)
        out = model.heads(features)
        part_idx = decide_part(ModelOutput(out.part_logits.detach(), out.anomaly_logits.detach()))
        seen["out"], seen["part_idx"], seen["features"] = out, part_idx, features.detach()
        logits = out.anomaly_logits if target == "anomaly" else out.part_logits
        return select_anomaly_logit(logits, part_idx)[:, None]  # [B, 1]

    with torch.enable_grad():
        cam = LayerGradCam(gated_logit, model.cam_layer)
        raw = cam.attribute(x, target=0, relu_attributions=True)  # [B, 1, h, w], >= 0
    maps = LayerAttribution.interpolate(raw.detach().float(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    out = seen["out"]
    output = ModelOutput(out.part_logits.detach(), out.anomaly_logits.detach())
    return scale_to_unit(maps), output, seen["part_idx"], seen["features"]


def gradcam(
    model: MultiTaskNet, x: torch.Tensor, part_idx: torch.Tensor | int, target: str = "anomaly"
) -> torch.Tensor:
    """Grad-CAM maps [B, 1, H, W] in [0, 1] for a given part per row (contract in design.md)."""
    fixed = torch.as_tensor(part_idx, device=x.device).long().expand(x.shape[0])
    maps, _, _, _ = gradcam_with_output(model, x, lambda out: fixed, target)
    return maps


def pooled_by_average(model: MultiTaskNet, image_size: int = 64) -> bool:
    """True when the heads are linear on the spatial mean of the CAM layer's output, i.e. when Grad-CAM can come
    from the forward pass. Checked numerically on the model (a probe image), not assumed from its name."""
    if not (isinstance(model.part_head, torch.nn.Linear) and isinstance(model.anomaly_head, torch.nn.Linear)):
        return False
    seen: list[torch.Tensor] = []
    handle = model.cam_layer.register_forward_hook(lambda module, inputs, output: seen.append(output))
    probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    parameter = next(model.parameters())
    try:
        with torch.inference_mode():
            pooled = model.backbone(probe.to(parameter.device, parameter.dtype)).float()
    finally:
        handle.remove()
    if len(seen) != 1 or seen[0].dim() != 4 or seen[0].shape[:2] != pooled.shape:
        return False
    means = seen[0].float().mean(dim=(2, 3))
    return bool(torch.allclose(means, pooled, rtol=1e-4, atol=1e-5))


def cam_from_forward(
    feature_map: torch.Tensor, head_weight: torch.Tensor, part_idx: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Grad-CAM without a backward pass (see the module docstring; valid only where ``pooled_by_average``).

    Args:
        feature_map: the CAM layer's output [B, C, h, w].
        head_weight: the deciding head's weight matrix [7, C] (the anomaly heads', or the part head's).
        part_idx: [B], the head row each image is explained by.
        size: (H, W) of the input tensor.
    Returns:
        maps [B, 1, H, W] in [0, 1], equal to Captum's LayerGradCam after the same upsampling and scaling.
    """
    weights = head_weight.float()[part_idx.long().to(head_weight.device)].to(feature_map.device)  # [B, C]
    raw = torch.einsum("bc,bchw->bhw", weights, feature_map.float()).clamp_min(0)[:, None]
    # What Captum's LayerAttribution.interpolate does for "bilinear".
    maps = torch.nn.functional.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)
    return scale_to_unit(maps)


def scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map by its own maximum; an all-zero (or non-finite) map stays zero, never NaN."""
    maps = torch.nan_to_num(maps.clamp_min(0), nan=0.0, posinf=0.0)
    peak = maps.flatten(1).amax(dim=1).view(-1, *([1] * (maps.dim() - 1)))
    return torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> Image.Image:
    """Blend a [H, W] heatmap in [0, 1] over the grayscale image; returns RGB of the image's size."""
    import matplotlib

    gray = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    if heatmap.shape != gray.shape[:2]:
        raise ValueError(f"heatmap {heatmap.shape} does not match image {gray.shape[:2]}")
    colour = matplotlib.colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3]
    weight = alpha * np.clip(heatmap, 0, 1)[..., None]  # cold regions keep the radiograph as it is
    blended = (1 - weight) * np.repeat(gray, 3, axis=2) + weight * colour
    return Image.fromarray(np.round(blended * 255).astype(np.uint8), mode="RGB")
