"""int8 for the CPU: static post-training quantisation of the checkpoint's ONNX graph, and the accuracy record that
decides whether it may serve.

Recipe (ONNX Runtime's static quantisation, QDQ format): weights int8 per output channel, activations uint8 per
tensor, ranges from the checkpoint's own training images (MinMax). ``reduce_range`` (7-bit weights) is on: ONNX Runtime
advises it for per-channel models on CPUs without VNNI, where u8 x s8 products can saturate, and a graph made here
may run on any CPU. Only the convolutions (and the pooling and residual additions between them) are quantised:
the heads and the out-of-distribution statistics stay in float, so the logits and the warning see int8 only
through the backbone.

The record (``config.json`` -> ``onnx_int8``) names the file, its sha256, the weights it was made from, the
calibration, the warning's statistics fitted on its own features and the measured agreement with fp32 on a stated
split (``GATE``). ``runners.verified_int8_graph`` serves the graph only when all of that matches and
``accuracy.passed`` is true. Export-time only: serving never imports this.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

OP_TYPES = ["Conv", "MaxPool", "Add", "GlobalAveragePool"]
# The gate, int8 against fp32 PyTorch on the same images: (figure, "min" | "max_difference", bound).
GATE = {
    "part_agreement": ("min", 0.995),  # share of images whose body part int8 calls as fp32 does
    "study_verdict_agreement": ("min", 0.99),  # share of studies with fp32's verdict (predicted gate)
    "study_auroc": ("max_difference", 0.005),  # overall, predicted gate
    "study_kappa": ("max_difference", 0.01),  # overall, predicted gate
    "part_kappa": ("max_difference", 0.01),  # Cohen's kappa of the body-part head against the true parts
    # Grad-CAM against fp32: every view fp32 calls abnormal (the maps a reader acts on) at cosine >= 0.98, and at
    # most 5 % of all views below it. Why not every view: a confidently normal view has almost no positive evidence,
    # ReLU(sum_k w_k A_k) is then a near-cancellation and any perturbation flips it (on the demo 4 of 418 such maps
    # are all zero in one runtime and not in the other, while the probabilities agree to 0.005).
    "map_cosine_min_abnormal": ("min", 0.98),
    "map_share_below_0.98": ("max", 0.05),
}


def quantize_graph(fp32_graph: Path, out: Path, calibration: Iterator[np.ndarray]) -> dict:
    """Quantise ``fp32_graph`` to ``out`` with batches [B, 3, S, S] float32 from ``calibration``; returns the recipe."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(calibration)
    seen = {"images": 0}

    class Reader(CalibrationDataReader):
        def get_next(self):
            batch = next(batches, None)
            if batch is None:
                return None
            seen["images"] += len(batch)
            return {"x": batch.astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="mura-mt-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_graph), str(prepared), skip_symbolic_shape=True)
        partial = out.with_name(f".{out.name}.tmp")
        quantize_static(
            str(prepared),
            str(partial),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=OP_TYPES,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        partial.replace(out)
    return {
        "format": "QDQ",
        "weights": "int8, per channel, reduce_range (7-bit)",
        "activations": "uint8, per tensor",
        "method": "MinMax",
        "op_types": OP_TYPES,
        "images": seen["images"],
    }


def map_cosines(reference: list[np.ndarray | None], candidate: list[np.ndarray | None]) -> np.ndarray:
    """Cosine similarity of each pair of Grad-CAM maps; two all-zero maps agree (1), one all-zero map does not (0)."""
    cosines = []
    for a, b in zip(reference, candidate):
        a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cosines.append(1.0 if na == nb == 0 else (0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))))
    return np.asarray(cosines)


def accuracy_record(
    fp32: tuple[dict, pd.DataFrame],
    int8: tuple[dict, pd.DataFrame],
    fp32_views: list,
    int8_views: list,
    true_parts: list[str],
    split: str,
) -> dict:
    """Gate int8 against fp32: two ``evaluate_checkpoint`` results (metrics and study predictions, predicted gate)
    and the views' answers with Grad-CAM (``Prediction`` lists, the same images in the same order as
    ``true_parts``); every figure, the bounds and the verdict."""
    from sklearn.metrics import cohen_kappa_score

    (a, a_studies), (b, b_studies) = fp32, int8
    cosines = map_cosines([v.heatmap for v in fp32_views], [v.heatmap for v in int8_views])
    abnormal = np.array([v.is_abnormal for v in fp32_views], dtype=bool)
    scores = [(x.unlike_training, y.unlike_training) for x, y in zip(fp32_views, int8_views)]
    part_kappa = lambda views: float(cohen_kappa_score(true_parts, [v.body_part for v in views]))  # noqa: E731
    figures = {
        name: {
            "study_kappa": metrics["predicted_gate"]["overall"]["study_kappa"],
            "study_auroc": metrics["predicted_gate"]["overall"]["study_auroc"],
            "part_accuracy": metrics["part_accuracy"],
            "part_kappa": part_kappa(views),
        }
        for name, metrics, views in (("fp32", a, fp32_views), ("int8", b, int8_views))
    }
    measured = {
        "split": split,
        "views": len(cosines),
        "studies": len(a_studies),
        **figures,
        "part_agreement": float(np.mean([x.body_part == y.body_part for x, y in zip(fp32_views, int8_views)])),
        "study_verdict_agreement": float((a_studies["pred"].to_numpy() == b_studies["pred"].to_numpy()).mean()),
        "map_cosine_min": float(cosines.min()),
        "map_cosine_median": float(np.median(cosines)),
        "map_cosine_min_abnormal": float(cosines[abnormal].min()) if abnormal.any() else None,
        "map_share_below_0.98": float((cosines < 0.98).mean()),
        "view_verdicts_differ": int(sum(x.is_abnormal != y.is_abnormal for x, y in zip(fp32_views, int8_views))),
        "gate": {name: f"{kind} {bound}" for name, (kind, bound) in GATE.items()},
    }
    if all(x is not None for pair in scores for x in pair):
        measured["warned_fp32"] = int(sum(x > 1 for x, _ in scores))
        measured["warned_int8"] = int(sum(y > 1 for _, y in scores))
    failures = []
    for name, (kind, bound) in GATE.items():
        if kind == "max_difference":
            value = abs(measured["int8"][name] - measured["fp32"][name])
            measured[f"{name}_difference"] = value
        else:
            value = measured[name]
        if value is None:  # no abnormal view: nothing to compare
            continue
        ok = value >= bound if kind == "min" else value <= bound  # NaN fails
        if not ok:
            failures.append(f"{name} {'differs by' if kind == 'max_difference' else 'is'} {value:.4f} ({kind} {bound})")
    return {**measured, "passed": not failures, "failures": failures}
