"""Predictor: the one inference path for the app, the CLI, evaluation and tests.

An image goes: ``io.load_radiograph`` -> THE eval transform -> one forward for both heads -> the gate (the
predicted part, or the one the caller gives) -> the part's calibration and threshold -> optionally Grad-CAM
from the same forward, mapped back onto the original image. A study decides its part once from the views'
mean part probabilities and averages the views' abnormality probabilities (``decision.decide``). Every entry
point (one image, one study, a batch of images, many studies) is one call of ``predict_studies``: one forward
over all views. The Predictor knows nothing about Gradio, training or Accelerate. It is safe to call from
several threads: decoding and assembling run in the caller's thread, only the model call is serialised.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mura_mt.inference.calibration import Calibration
from mura_mt.inference.checkpoint import load_extra_tensors, model_from_state, read_checkpoint, resolve_checkpoint
from mura_mt.inference.decision import decide
from mura_mt.inference.explain import cam_from_forward, scale_to_unit
from mura_mt.imaging.io import ImageSource, load_radiograph
from mura_mt.labels import BODY_PARTS, parse_body_part
from mura_mt.model import ModelOutput, MultiTaskNet
from mura_mt.inference.ood import WARNING as UNLIKE_TRAINING
from mura_mt.inference.ood import OodFeatures, OutOfDistribution
from mura_mt.inference.operating_points import with_warnings
from mura_mt.inference.region import evidence_region
from mura_mt.imaging.preprocessing import Geometry, eval_transform, unletterbox
from mura_mt.inference.runners import ModelRunner, TorchRunner, make_runner, runtime_file
from mura_mt.inference.serving import ServingConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedImage:
    """An image decoded and preprocessed (``Predictor.prepare``), ready for a forward pass; lets callers decode
    the next images in other threads while the model runs."""

    gray: Image.Image
    x: torch.Tensor  # [1, 3, S, S]
    geometry: Geometry


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
    warnings: list[str] = field(default_factory=list)  # the most serious first
    # How unlike the training images (``ood``): above 1 warns; None when the checkpoint has no such score.
    unlike_training: float | None = None
    # "likely abnormal", "uncertain" or "likely normal" by the part's operating points (``operating_points``);
    # None when the checkpoint has none.
    triage: str | None = None
    # Whose guarantee stands behind a "likely ..." group: the body part's own operating point, or "site-wide" (a
    # marginal guarantee over the calibration studies' case mix, for a part without a point of its own); else None.
    triage_basis: str | None = None

    @functools.cached_property
    def region(self) -> list[list[float]] | None:
        """Where the evidence is: the closed outline [[x, y], ...] of the Grad-CAM map at half its maximum around its
        peak, in the original image's pixel coordinates; None without a map or when the map has no single region.
        The region the model's evidence comes from, not a delineated lesion. Traced when first asked for (the SR,
        the API, the upload tab), not for every explained view (bulk overlays, reports, export checks)."""
        return evidence_region(self.heatmap)

    def to_dict(self) -> dict:
        """JSON-ready fields and the region (the heatmap is left out)."""
        return {**_fields(self, "heatmap"), "region": self.region}


@dataclass(frozen=True)
class StudyPrediction(Prediction):
    """A study: the part decided once for all views, probability = mean of the views'."""

    views: list[Prediction] = field(default_factory=list)

    def to_dict(self) -> dict:
        base = {**_fields(self, "heatmap", "views"), "region": self.region}
        return {**base, "views": [view.to_dict() for view in self.views]}


def _fields(prediction: Prediction, *left_out: str) -> dict:
    """The dataclass fields but ``left_out`` (the cached region lives in ``__dict__`` too, once traced)."""
    return {k: v for k, v in prediction.__dict__.items() if k not in (*left_out, "region")}


class Predictor:
    """Loads a checkpoint once; predicts images and studies.

    The Predictor owns the model it is given: its runner (``runtime``) moves it to ``device``, puts it in eval mode
    and freezes its weights. Build it from a checkpoint with ``from_pretrained``; pass a model you still train
    elsewhere only as a copy. ``precision``: "fp32", "bf16" (autocast; channels-last) or "auto" (bf16 where the
    hardware has it natively, see ``serving``); ONNX Runtime runs fp32 (or the checked int8 graph).
    """

    def __init__(
        self,
        model: MultiTaskNet | None,  # None when ``runner`` is given: the runner holds (or builds) it
        serving: ServingConfig,
        device: str | torch.device = "cpu",
        ood: OutOfDistribution | None = None,
        precision: str = "fp32",
        runner: ModelRunner | None = None,
    ):
        # The runner executes the network (PyTorch unless told otherwise; ``from_pretrained`` picks by hardware).
        self.runner = runner or TorchRunner(model, device, precision)
        self.device = self.runner.device
        self.precision = self.runner.precision
        self.runtime = self.runner.name
        self.serving = serving
        self.prep = serving.preprocessing
        self.calibration = serving.calibration
        self.ood = ood
        # Grad-CAM from the forward where the heads sit on average-pooled features (checked on the model).
        self.cam_from_forward = self.runner.cam_from_forward
        self._lock = threading.Lock()

    @property
    def model(self) -> MultiTaskNet:
        """The PyTorch network (an ONNX runner builds it when first asked for)."""
        return self.runner.model

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        runtime: str | None = None,
    ) -> Predictor:
        """From a checkpoint folder or a Hugging Face Hub repo id (safetensors only).

        ``runtime``: "torch", "onnx" (ONNX Runtime on the CPU, graph exported from these weights and cached),
        "onnx-int8" (the checkpoint's gated int8 graph) or "auto" (the fastest that keeps the answers here: the
        int8 graph on x86 CPUs when its gate passed, else PyTorch bf16 on CPUs with native bf16, ONNX Runtime fp32
        on the others, PyTorch on GPUs; ``runners.resolve_runtime``); None reads ``MURA_MT_RUNTIME`` (default
        auto). ``precision="fp32", runtime="torch"`` is the reference the int8 gate measures against."""
        directory = resolve_checkpoint(path_or_hub_id)
        state, config = read_checkpoint(directory)
        build = functools.partial(model_from_state, state, config, directory)  # only if the runtime needs the network
        runner = make_runner(build, config, directory, runtime, device, precision, state["anomaly_head.weight"])
        # The warning's statistics fitted on the features of the runtime that serves (the int8 graph ships its own).
        ood_file = runtime_file(directory, config, runner.name, "ood")
        ood = OutOfDistribution.from_tensors(load_extra_tensors(directory, *([ood_file.name] if ood_file else [])))
        if ood is None:
            logger.warning(
                f"{path_or_hub_id} carries no statistics for the 'unlike the training images' warning (exported "
                "before it existed?); answers on foreign images will not be flagged. Re-train or re-export it."
            )
        return cls(None, ServingConfig.from_checkpoint(config), device, ood, runner.precision, runner=runner)

    def prepare(self, image: ImageSource | PreparedImage) -> PreparedImage:
        """Decode (PNG, JPEG or DICOM; path, bytes, PIL or numpy) and apply THE eval transform."""
        if isinstance(image, PreparedImage):
            return image
        gray = image if isinstance(image, Image.Image) and image.mode == "L" else load_radiograph(image)
        x, geometry = eval_transform(gray, self.prep)
        return PreparedImage(gray, x, geometry)

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """THE eval transform (the one validation uses): -> float [1, 3, S, S]."""
        return self.prepare(image).x

    def predict(self, image: ImageSource, body_part: str | None = None, explain: bool = False) -> Prediction:
        """Predict one view. ``body_part`` (e.g. "wrist") overrides the part head's choice for the gate."""
        return self.predict_studies([[image]], body_part, explain)[0].views[0]

    def predict_batch(
        self, images: Sequence[ImageSource | PreparedImage], body_part: str | None = None, explain: bool = False
    ) -> list[Prediction]:
        """Predict independent images in one forward; each is gated by its own predicted part (or the given one)."""
        return [study.views[0] for study in self.predict_studies([[image] for image in images], body_part, explain)]

    def predict_study(
        self, images: Sequence[ImageSource | PreparedImage], body_part: str | None = None, explain: bool = False
    ) -> StudyPrediction:
        """Predict the views of one study together; the part is decided once for all of them."""
        if not images:
            raise ValueError("a study needs at least one image")
        return self.predict_studies([images], body_part, explain)[0]

    def predict_studies(
        self,
        studies: Sequence[Sequence[ImageSource | PreparedImage]],
        body_part: str | None = None,
        explain: bool = False,
    ) -> list[StudyPrediction]:
        """Predict several studies in ONE forward over all their views; each study decides its own part."""
        if not studies or any(len(views) == 0 for views in studies):
            raise ValueError("every study needs at least one image")
        given = parse_body_part(body_part) if body_part not in (None, "", "auto") else None
        prepared = [[self.prepare(image) for image in views] for views in studies]
        flat = [p for views in prepared for p in views]
        study_of_view = np.repeat(np.arange(len(studies)), [len(views) for views in studies])
        x = torch.cat([p.x for p in flat])
        decide_part = _fixed_part(BODY_PARTS.index(given)) if given else _parts_by_study(study_of_view)
        maps = None
        with self._lock:
            if explain and not self.cam_from_forward:
                maps, forward = self.runner.gradcam_captum(x, decide_part)
            else:
                forward = self.runner(x)
        out = forward.output
        part_idx = decide_part(out)
        if explain and maps is None:
            maps = cam_from_forward(forward.feature_map, self.runner.anomaly_head_weight, part_idx, x.shape[-2:])
        ood_scores = None
        if self.ood is not None:
            ood_scores = self.ood.score(OodFeatures(forward.pooled.cpu(), forward.style.cpu())).numpy()
        view_part = part_idx.cpu().numpy()
        part_of_study = np.zeros(len(studies), dtype=np.int64)
        part_of_study[study_of_view] = view_part
        part_probs = torch.softmax(out.part_logits.float(), dim=1).cpu().numpy()  # [V, 7]
        anomaly_logits = out.anomaly_logits.float().cpu().numpy()  # [V, 7]
        decided = decide(part_probs, anomaly_logits, study_of_view, self.calibration, part_idx=part_of_study)
        views = [
            self._view(p, v, int(view_part[v]), given is not None, part_probs[v], decided, maps, ood_scores)
            for v, p in enumerate(flat)
        ]
        results = []
        for s in range(len(studies)):
            mine = [views[v] for v in np.flatnonzero(study_of_view == s)]
            warnings = _most_serious_first(w for view in mine for w in view.warnings)
            results.append(
                StudyPrediction(
                    body_part=BODY_PARTS[part_of_study[s]],
                    part_probs=_as_dict(part_probs[study_of_view == s].mean(axis=0)),
                    gated_by="given" if given else "predicted",
                    abnormal_prob=float(decided.probs[s]),
                    threshold=float(decided.thresholds[s]),
                    is_abnormal=bool(decided.is_abnormal[s]),
                    heatmap=None,
                    warnings=warnings,
                    unlike_training=max(v.unlike_training for v in mine) if ood_scores is not None else None,
                    **self._triage(BODY_PARTS[part_of_study[s]], float(decided.probs[s]), warnings),
                    views=mine,
                )
            )
        return results

    def predict_logits(self, x: torch.Tensor) -> ModelOutput:
        """Raw logits for an already preprocessed batch (used by evaluation)."""
        with self._lock:
            out = self.runner(x).output
        return ModelOutput(out.part_logits.cpu(), out.anomaly_logits.cpu())

    def _view(self, prepared: PreparedImage, v: int, part: int, given: bool, part_probs, decided, maps, ood_scores):
        heatmap = None
        if maps is not None:
            heatmap = scale_to_unit(unletterbox(maps[v : v + 1].float().cpu(), prepared.geometry))[0, 0].numpy()
        view_prob = float(decided.view_probs[v])
        threshold = float(self.calibration.threshold[part])
        warnings = self._warnings(prepared.gray, part_probs, ood_scores, v, part, given)
        return Prediction(
            body_part=BODY_PARTS[part],
            part_probs=_as_dict(part_probs),
            gated_by="given" if given else "predicted",
            abnormal_prob=view_prob,
            threshold=threshold,
            is_abnormal=view_prob > threshold,  # the rule applied to this view alone
            heatmap=heatmap,
            warnings=warnings,
            unlike_training=float(ood_scores[v]) if ood_scores is not None else None,
            **self._triage(BODY_PARTS[part], view_prob, warnings),
        )

    def _triage(self, part: str, prob: float, warnings: list[str]) -> dict:
        """``triage`` and ``triage_basis`` (both None without operating points)."""
        points = self.serving.operating_points
        if points is None:
            return {"triage": None, "triage_basis": None}
        group = with_warnings(points.triage(part, prob), warnings)
        return {"triage": group, "triage_basis": points.basis(part, group)}

    def _warnings(
        self, gray: Image.Image, part_probs: np.ndarray, ood_scores, v: int, part: int, given: bool
    ) -> list[str]:
        warnings = []
        seen = int(part_probs.argmax())
        if float(np.asarray(gray).std()) < 2.0:  # all black, all white or constant: nothing to judge
            warnings.append("The image is almost uniform: it shows no radiograph content to judge.")
        elif ood_scores is not None and ood_scores[v] > 1.0:
            warnings.append(UNLIKE_TRAINING)
        if given and seen != part and part_probs[seen] >= self.serving.low_part_confidence:
            warnings.append(
                f"You chose {BODY_PARTS[part]}, but the image looks like a {BODY_PARTS[seen]} ({part_probs[seen]:.0%})."
            )
        elif not given and part_probs[seen] < self.serving.low_part_confidence:
            warnings.append(
                f"Body part uncertain ({BODY_PARTS[seen]} {part_probs[seen]:.0%}); "
                "choose the body part to be sure the right head decides."
            )
        return warnings


def _most_serious_first(warnings) -> list[str]:
    """Each warning once, "unlike the training images" first: it says the rest of the answer is not to be trusted."""
    unique = list(dict.fromkeys(warnings))
    return sorted(unique, key=lambda w: w != UNLIKE_TRAINING)


def _as_dict(probs: np.ndarray) -> dict[str, float]:
    return {part: float(p) for part, p in zip(BODY_PARTS, probs)}


def _parts_by_study(study_of_view: np.ndarray):
    """The part decision for views grouped into studies, by THE decision rule (argmax of each study's mean part
    probabilities), as a callback for the forward (Grad-CAM decides inside its own forward)."""

    def decide_part(out: ModelOutput) -> torch.Tensor:
        part_probs = torch.softmax(out.part_logits.float(), dim=1).cpu().numpy()
        logits = out.anomaly_logits.float().cpu().numpy()
        parts = decide(part_probs, logits, study_of_view, Calibration()).part_idx[study_of_view]
        return torch.as_tensor(parts, dtype=torch.long, device=out.part_logits.device)

    return decide_part


def _fixed_part(idx: int):
    return lambda out: torch.full((out.part_logits.shape[0],), idx, dtype=torch.long, device=out.part_logits.device)
