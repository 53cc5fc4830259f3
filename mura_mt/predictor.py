"""Predictor: the one inference path for the app, the CLI, evaluation and tests.

An image goes: ``io.load_radiograph`` -> THE eval transform -> one forward for both heads -> the gate (the
predicted part, or the one the caller gives) -> the part's calibration and threshold -> optionally Grad-CAM
from the same forward, mapped back onto the original image. A study decides its part once from the views'
mean part probabilities and averages the views' abnormality probabilities. The Predictor knows nothing
about Gradio, training or Accelerate. It is safe to call from several threads (one model call at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mura_mt.calibration import Calibration
from mura_mt.checkpoint import load_checkpoint, load_extra_tensors, resolve_checkpoint
from mura_mt.decision import decide
from mura_mt.explain import gradcam_with_output, scale_to_unit
from mura_mt.io import ImageSource, load_radiograph
from mura_mt.labels import BODY_PARTS, parse_body_part
from mura_mt.model import ModelOutput, MultiTaskNet
from mura_mt.ood import FeatureDistance
from mura_mt.preprocessing import Geometry, Preprocessing, eval_transform, unletterbox


@dataclass(frozen=True)
class Prediction:
    """One view's answer. ``part_probs`` and the probabilities are ready for ``gr.Label``."""

    body_part: str
    part_probs: dict[str, float]
    gated_by: str  # "predicted" or "given"
    abnormal_prob: float
    threshold: float
    is_abnormal: bool
    heatmap: np.ndarray | None = None  # [H, W] in [0, 1] on the ORIGINAL image, or None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready fields (the heatmap is left out)."""
        return {k: v for k, v in self.__dict__.items() if k != "heatmap"}


@dataclass(frozen=True)
class StudyPrediction(Prediction):
    """A study: the part decided once for all views, probability = mean of the views'."""

    views: list[Prediction] = field(default_factory=list)

    def to_dict(self) -> dict:
        base = {k: v for k, v in self.__dict__.items() if k not in ("heatmap", "views")}
        return {**base, "views": [view.to_dict() for view in self.views]}


class Predictor:
    """Loads a checkpoint once; predicts images and studies.

    The Predictor owns the model it is given: it moves it to ``device``, puts it in eval mode and freezes its
    weights (Grad-CAM needs gradients only up to the CAM layer). Build it from a checkpoint with
    ``from_pretrained``; pass a model you still train elsewhere only as a copy.
    """

    def __init__(
        self, model: MultiTaskNet, config: dict, device: str | torch.device = "cpu", ood: FeatureDistance | None = None
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)  # Grad-CAM needs no weight gradients
        self.config = config
        pre = config["preprocessing"]
        self.prep = Preprocessing(int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"]))
        self.calibration = Calibration.from_dict(config["calibration"])
        self.ood = ood
        self.low_confidence = float(config.get("ood", {}).get("low_part_confidence", 0.6))
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """From a checkpoint folder or a Hugging Face Hub repo id (safetensors only)."""
        directory = resolve_checkpoint(path_or_hub_id)
        model, config = load_checkpoint(directory)
        return cls(model, config, device, FeatureDistance.from_tensors(load_extra_tensors(directory)))

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """THE eval transform (the one validation uses): -> float [1, 3, S, S]."""
        return self._prepare(image)[1]

    def predict(self, image: ImageSource, body_part: str | None = None, explain: bool = False) -> Prediction:
        """Predict one view. ``body_part`` (e.g. "wrist") overrides the part head's choice for the gate."""
        return self.predict_study([image], body_part, explain).views[0]

    def predict_study(
        self, images: Sequence[ImageSource], body_part: str | None = None, explain: bool = False
    ) -> StudyPrediction:
        """Predict the views of one study together; the part is decided once for all of them."""
        if not images:
            raise ValueError("a study needs at least one image")
        given = parse_body_part(body_part) if body_part not in (None, "", "auto") else None
        prepared = [self._prepare(image) for image in images]
        x = torch.cat([p[1] for p in prepared]).to(self.device)
        decide = _fixed_part(BODY_PARTS.index(given)) if given else _study_part
        with self._lock:
            if explain:
                maps, out, part_idx, features = gradcam_with_output(self.model, x, decide)
            else:
                with torch.inference_mode():
                    features = self.model.backbone(x)
                    out = self.model.heads(features)
                    part_idx = decide(out)
                maps = None
        ood_scores = self.ood.score(features.float().cpu()).numpy() if self.ood is not None else None
        return self._assemble(out, int(part_idx[0]), given is not None, prepared, maps, ood_scores)

    @torch.inference_mode()
    def predict_logits(self, x: torch.Tensor) -> ModelOutput:
        """Raw logits for an already preprocessed batch (used by evaluation)."""
        with self._lock:
            out = self.model(x.to(self.device))
        return ModelOutput(out.part_logits.float().cpu(), out.anomaly_logits.float().cpu())

    def _prepare(self, image: ImageSource) -> tuple[Image.Image, torch.Tensor, Geometry]:
        gray = image if isinstance(image, Image.Image) and image.mode == "L" else load_radiograph(image)
        x, geometry = eval_transform(gray, self.prep)
        return gray, x, geometry

    def _assemble(self, out: ModelOutput, part: int, given: bool, prepared, maps, ood_scores) -> StudyPrediction:
        part_probs = torch.softmax(out.part_logits.float(), dim=1).cpu().numpy()  # [V, 7]
        anomaly_logits = out.anomaly_logits.float().cpu().numpy()  # [V, 7]
        views_study = np.zeros(len(prepared), dtype=np.int64)
        decided = decide(part_probs, anomaly_logits, views_study, self.calibration, part_idx=np.array([part]))
        threshold = float(decided.thresholds[0])
        gated_by = "given" if given else "predicted"
        views = []
        for v, (gray, _, geometry) in enumerate(prepared):
            heatmap = None
            if maps is not None:
                heatmap = scale_to_unit(unletterbox(maps[v : v + 1].cpu(), geometry))[0, 0].numpy()
            view_prob = float(decided.view_probs[v])
            views.append(
                Prediction(
                    body_part=BODY_PARTS[part],
                    part_probs=_as_dict(part_probs[v]),
                    gated_by=gated_by,
                    abnormal_prob=view_prob,
                    threshold=threshold,
                    is_abnormal=view_prob > threshold,  # the rule applied to this view alone
                    heatmap=heatmap,
                    warnings=self._warnings(gray, part_probs[v], ood_scores, v, part, given),
                )
            )
        return StudyPrediction(
            body_part=BODY_PARTS[part],
            part_probs=_as_dict(part_probs.mean(axis=0)),
            gated_by=gated_by,
            abnormal_prob=float(decided.probs[0]),
            threshold=threshold,
            is_abnormal=bool(decided.is_abnormal[0]),
            heatmap=None,
            warnings=sorted({w for view in views for w in view.warnings}),
            views=views,
        )

    def _warnings(
        self, gray: Image.Image, part_probs: np.ndarray, ood_scores, v: int, part: int, given: bool
    ) -> list[str]:
        warnings = []
        seen = int(part_probs.argmax())
        if float(np.asarray(gray).std()) < 2.0:  # all black, all white or constant: nothing to judge
            warnings.append("The image is almost uniform: it shows no radiograph content to judge.")
        elif ood_scores is not None and ood_scores[v] > self.ood.threshold:
            warnings.append("This may not be an upper-extremity radiograph: it looks unlike the training images.")
        if given and seen != part and part_probs[seen] >= self.low_confidence:
            warnings.append(
                f"You chose {BODY_PARTS[part]}, but the image looks like a {BODY_PARTS[seen]} ({part_probs[seen]:.0%})."
            )
        elif not given and part_probs[seen] < self.low_confidence:
            warnings.append(
                f"Body part uncertain ({BODY_PARTS[seen]} {part_probs[seen]:.0%}); "
                "choose the body part to be sure the right head decides."
            )
        return warnings


def _as_dict(probs: np.ndarray) -> dict[str, float]:
    return {part: float(p) for part, p in zip(BODY_PARTS, probs)}


def _study_part(out: ModelOutput) -> torch.Tensor:
    """One part for the whole study, chosen by THE decision rule (argmax of the views' mean part probabilities)."""
    part_probs = torch.softmax(out.part_logits.float(), dim=1).cpu().numpy()
    views_study = np.zeros(len(part_probs), dtype=np.int64)
    part = int(decide(part_probs, out.anomaly_logits.float().cpu().numpy(), views_study, Calibration()).part_idx[0])
    return torch.full((len(part_probs),), part, dtype=torch.long, device=out.part_logits.device)


def _fixed_part(idx: int):
    return lambda out: torch.full((out.part_logits.shape[0],), idx, dtype=torch.long, device=out.part_logits.device)
