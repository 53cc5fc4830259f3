"""Grad-CAM with Captum's LayerGradCam on the backbone's last convolutional stage, and overlays.

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
from captum.attr import LayerAttribution, LayerGradCam
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
