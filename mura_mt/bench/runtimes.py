"""The runtime block of scripts/benchmark.py: PyTorch against ONNX Runtime (fp32 and int8) on this CPU.

For each input size and batch size, ``Predictor.predict_batch`` on preprocessed images (what a request pays after
decoding), with and without the explanation, for:

- ``torch_fp32``: eager PyTorch fp32, the baseline; its explanation is Captum's LayerGradCam (a backward pass),
  what every explained answer cost before the forward-pass Grad-CAM (``torch_fp32_captum``); ``torch_fp32`` with
  explain uses the forward-pass map;
- ``onnx_fp32``: ONNX Runtime, the graph exported from the same weights;
- ``onnx_int8``: the same graph statically quantised (calibrated on the synthetic examples: the speed of int8 does
  not depend on how well it was calibrated);
- ``torch_bf16`` (only on CPUs with native bf16): what ``--runtime torch --precision auto`` runs there.

Every Predictor carries a full-size out-of-distribution score (a 4,096-image bank), as served. Medians of
interleaved rounds; ratios against ``torch_fp32`` of the same size, batch and round set.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mura_mt.bench.inference import full_size_ood, latency_ms
from mura_mt.hardware import cpu_has_native_bf16, describe_cpu, usable_cores
from mura_mt.imaging.preprocessing import Preprocessing
from mura_mt.inference.checkpoint import load_checkpoint
from mura_mt.inference.onnx_graph import cached_graph
from mura_mt.inference.predictor import Predictor, PreparedImage
from mura_mt.inference.runners import OnnxRunner, TorchRunner
from mura_mt.inference.serving import ServingConfig

REPO = Path(__file__).resolve().parents[2]
TARGETS = {
    "onnx_fp32_vs_torch_fp32_batch1": "<= 0.6",
    "onnx_fp32_explain_vs_torch_captum_batch1": "<= 0.5",
    "onnx_int8_vs_torch_fp32_batch1": "<= 0.35",
}


def _predictors(checkpoint: Path, size: int, folder: Path) -> dict[str, Predictor]:
    from mura_mt.inference.quantize import quantize_graph

    model, config = load_checkpoint(checkpoint)
    pre = config["preprocessing"]
    serving = ServingConfig(Preprocessing(size, tuple(pre["mean"]), tuple(pre["std"])))
    ood = full_size_ood(model)
    graph = cached_graph(model, f"{config['weights_sha256']}-bench", size, folder)
    examples = sorted((REPO / "examples").glob("*.png"))
    torch_predictor = Predictor(model, serving, ood=ood, runner=TorchRunner(model, "cpu", "fp32"))
    calibration = [torch.cat([torch_predictor.preprocess(p) for p in examples]).numpy()]
    int8_graph = folder / f"int8-{size}.onnx"
    quantize_graph(graph, int8_graph, iter(calibration))
    captum = Predictor(model, serving, ood=ood, runner=torch_predictor.runner)
    captum.cam_from_forward = False  # the explanation as it was: Captum, forward + backward
    predictors = {
        "torch_fp32": torch_predictor,
        "torch_fp32_captum": captum,
        "onnx_fp32": Predictor(model, serving, ood=ood, runner=OnnxRunner(graph, model)),
        "onnx_int8": Predictor(model, serving, ood=ood, runner=OnnxRunner(int8_graph, model, "onnx-int8")),
    }
    if cpu_has_native_bf16():  # what precision auto picks for PyTorch on this CPU, for comparison
        bf16_model = copy.deepcopy(model)
        predictors["torch_bf16"] = Predictor(
            bf16_model, serving, ood=ood, runner=TorchRunner(bf16_model, "cpu", "bf16")
        )
    return predictors


def _images(predictor: Predictor, batch: int) -> list[PreparedImage]:
    rng = np.random.default_rng(0)
    examples = sorted((REPO / "examples").glob("*.png"))
    images = []
    for i in range(batch):
        image = Image.open(examples[i % len(examples)]).convert("L")
        # A different crop per image, so a batch is not one image repeated.
        left, top = int(rng.integers(0, 20)), int(rng.integers(0, 20))
        images.append(predictor.prepare(image.crop((left, top, image.width - 20 + left, image.height - 20 + top))))
    return images


def runtime_block(checkpoint: Path, quick: bool) -> dict:
    sizes, batches = ((64,), (1, 4)) if quick else ((224, 320), (1, 16))
    repeats, rounds = (2, 1) if quick else (10, 3)
    results: dict = {"cpu": describe_cpu(), "threads": usable_cores(), "latency_ms": {}, "ratios": {}}
    with tempfile.TemporaryDirectory(prefix="mura-mt-runtimes-") as folder:
        for size in sizes:
            predictors = _predictors(checkpoint, size, Path(folder))
            for batch in batches:
                images = _images(predictors["torch_fp32"], batch)
                variants = {}
                for name, predictor in predictors.items():
                    if name != "torch_fp32_captum":
                        variants[name] = lambda p=predictor: p.predict_batch(images)
                    variants[f"{name}_explain"] = lambda p=predictor: p.predict_batch(images, explain=True)
                measured: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(rounds):  # interleaved: drift on a noisy machine hits every variant alike
                    for name, fn in variants.items():
                        measured[name].append(latency_ms(fn, repeats, torch.device("cpu")))
                key = f"{size}px_batch{batch}"
                median = {name: statistics.median(values) for name, values in measured.items()}
                results["latency_ms"][key] = median
                base = median["torch_fp32"]
                results["ratios"][key] = {
                    "onnx_fp32_vs_torch_fp32": median["onnx_fp32"] / base,
                    "onnx_int8_vs_torch_fp32": median["onnx_int8"] / base,
                    "onnx_fp32_explain_vs_torch_captum": median["onnx_fp32_explain"]
                    / median["torch_fp32_captum_explain"],
                    "onnx_int8_explain_vs_torch_captum": median["onnx_int8_explain"]
                    / median["torch_fp32_captum_explain"],
                    "torch_forward_cam_vs_captum": median["torch_fp32_explain"] / median["torch_fp32_captum_explain"],
                    "images_per_s_onnx_int8": batch / median["onnx_int8"] * 1000,
                    "images_per_s_torch_fp32": batch / base * 1000,
                }
    first = results["ratios"][f"{sizes[0]}px_batch1"]
    results["targets"] = {
        name: {"goal": goal, "measured": first[name.removesuffix("_batch1")]} for name, goal in TARGETS.items()
    }
    return results
