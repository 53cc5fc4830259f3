"""The inference block of scripts/benchmark.py: one network against the two-stage design it replaces.

Latencies at batch 1 (medians of interleaved rounds): a bare timm resnet18 forward (the unit), our
``Predictor.predict`` (with a full-size out-of-distribution score, as served) in PyTorch fp32 on a decoded image and
on a PNG file, with the Grad-CAM explanation, the same in the runtime ``--runtime auto`` picks (``predict_auto_ms``;
``two_stage_ratio`` uses it: what a user gets), and the two-stage
reference: a body-part ResNet-18, then the chosen part's own ResNet-18 (eight models resident, random weights,
the same preprocessing and input size), its Grad-CAM computed as the seed did (Captum on the anomaly model, a
forward and backward of its own). Then model throughput at batch 1, 8 and 32 in fp32 and in bf16 +
channels-last, and parameters and resident memory of one model against the eight-model design (right after
loading, and after one forward, whose activations and allocator pools weigh alike in both designs).
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from captum.attr import LayerGradCam
from PIL import Image

from mura_mt.imaging.preprocessing import Preprocessing, eval_transform
from mura_mt.inference.onnx_graph import cached_graph
from mura_mt.inference.ood import STYLE_STAGES, OutOfDistribution
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import OnnxRunner, resolve_runtime
from mura_mt.inference.serving import ServingConfig
from mura_mt.model import MultiTaskNet

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TwoStage:
    """The seed's design: a 7-way body-part ResNet-18, then one of seven binary ResNet-18 anomaly models."""

    def __init__(self, device: torch.device):
        self.part_model = timm.create_model("resnet18", pretrained=False, num_classes=7).to(device).eval()
        self.anomaly_models = [
            timm.create_model("resnet18", pretrained=False, num_classes=1).to(device).eval() for _ in range(7)
        ]

    def predict(self, x: torch.Tensor) -> tuple[int, float]:
        with torch.inference_mode():
            part = int(self.part_model(x).argmax(dim=1)[0])
            return part, float(torch.sigmoid(self.anomaly_models[part](x))[0, 0])

    def explain(self, x: torch.Tensor) -> torch.Tensor:
        part, _ = self.predict(x)
        model = self.anomaly_models[part]
        return LayerGradCam(model, model.layer4).attribute(x.clone().requires_grad_(True), target=0)

    def parameters(self) -> int:
        return sum(p.numel() for m in (self.part_model, *self.anomaly_models) for p in m.parameters())


def latency_ms(fn, repeats: int, device: torch.device) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_size_ood(model: MultiTaskNet) -> OutOfDistribution:
    """An out-of-distribution score of the largest size a checkpoint carries (a 4,096-image bank), so that the
    Predictor's latencies include what serving pays for the warning (its values do not matter here)."""
    g = torch.Generator().manual_seed(0)
    width = model.backbone.num_features
    style = 2 * sum(info["num_chs"] for info in model.backbone.feature_info[1 : 1 + STYLE_STAGES])
    return OutOfDistribution(
        bank=torch.nn.functional.normalize(torch.randn(4096, width, generator=g), dim=1),
        style_mean=torch.zeros(style),
        style_precision=torch.eye(style),
        thresholds=torch.ones(2),
        k=1,
        false_alarm_rate=0.02,
    )


def auto_predictor(
    model: MultiTaskNet, serving: ServingConfig, ood: OutOfDistribution, device: torch.device, folder: Path
) -> Predictor:
    """The Predictor as ``--runtime auto --precision auto`` builds it on ``device``."""
    if resolve_runtime("auto", device, "auto").name == "onnx":  # random weights: no int8 graph
        graph = cached_graph(model, "bench-random-resnet18", serving.preprocessing.image_size, folder)
        return Predictor(model, serving, ood=ood, runner=OnnxRunner(graph, model))
    return Predictor(model, serving, device=device, ood=ood, precision="auto")


def latencies(size: int, repeats: int, rounds: int, device: torch.device, folder: Path) -> dict[str, float]:
    torch.manual_seed(0)
    bare = timm.create_model("resnet18", pretrained=False, num_classes=7).to(device).eval()
    serving = ServingConfig(Preprocessing(size, MEAN, STD))
    model = MultiTaskNet("resnet18")
    ood = full_size_ood(model)
    auto = auto_predictor(copy.deepcopy(model), serving, ood, device, folder)
    predictor = Predictor(model, serving, device=device, ood=ood, precision="fp32")
    two_stage = TwoStage(device)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 400), dtype=np.uint8), mode="L")
    png = folder / "view.png"
    image.save(png)
    x = torch.randn(1, 3, size, size, device=device)

    def bare_forward():
        with torch.inference_mode():
            bare(x)

    def two_stage_predict():
        two_stage.predict(eval_transform(image, serving.preprocessing)[0].to(device))

    def two_stage_explain():
        two_stage.explain(eval_transform(image, serving.preprocessing)[0].to(device))

    variants = {
        "bare_forward_ms": bare_forward,
        "predict_ms": lambda: predictor.predict(image),
        "predict_with_decoding_ms": lambda: predictor.predict(png),
        "predict_explain_ms": lambda: predictor.predict(image, explain=True),
        "predict_auto_ms": lambda: auto.predict(image),
        "predict_auto_explain_ms": lambda: auto.predict(image, explain=True),
        "two_stage_ms": two_stage_predict,
        "two_stage_explain_ms": two_stage_explain,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved, so drift on a noisy machine hits every variant alike
        for name, fn in variants.items():
            results[name].append(latency_ms(fn, repeats, device))
    return {name: statistics.median(values) for name, values in results.items()}


def throughput(size: int, batches: tuple[int, ...], repeats: int, device: torch.device) -> dict[str, float]:
    """Forward images/s of the multi-task model on preloaded tensors, fp32 and bf16 + channels-last."""
    rates = {}
    for precision in ("fp32", "bf16"):
        memory_format = torch.channels_last if precision == "bf16" else torch.contiguous_format
        model = MultiTaskNet("resnet18").to(device, memory_format=memory_format).eval()
        for batch in batches:
            x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)

            def run():
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    model(x)

            rates[f"{precision}_batch{batch}_images_per_s"] = batch / latency_ms(run, repeats, device) * 1000
    return rates


_MEMORY_PROBE = """
import json, sys, psutil, torch, timm
from mura_mt.model import MultiTaskNet
from mura_mt.inference.ood import STYLE_STAGES, OutOfDistribution
from mura_mt.bench.inference import TwoStage
torch.set_num_threads(1)
process = psutil.Process()
before = process.memory_info().rss
x = torch.randn(1, 3, {size}, {size})
if sys.argv[1] == "one":
    model = MultiTaskNet("resnet18").eval()
    loaded = process.memory_info().rss
    with torch.inference_mode():
        model(x)
else:
    design = TwoStage(torch.device("cpu"))
    loaded = process.memory_info().rss
    design.predict(x)
print(json.dumps([(loaded - before) / 2**20, (process.memory_info().rss - before) / 2**20]))
"""


def resident_mb(design: str, size: int) -> tuple[float, float]:
    """Resident memory (MiB) that one design adds to a fresh Python process: (models loaded, after one forward)."""
    code = _MEMORY_PROBE.format(size=size)
    done = subprocess.run([sys.executable, "-c", code, design], capture_output=True, text=True, timeout=300, check=True)
    loaded, after_forward = json.loads(done.stdout.strip().splitlines()[-1])
    return float(loaded), float(after_forward)


def inference_block(size: int, quick: bool, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory(prefix="mura-mt-bench-") as folder:
        lat = latencies(size, repeats=3 if quick else 15, rounds=1 if quick else 3, device=device, folder=Path(folder))
    rates = throughput(size, (1, 8) if quick else (1, 8, 32), repeats=2 if quick else 7, device=device)
    one_params = sum(p.numel() for p in MultiTaskNet("resnet18").parameters())
    eight_params = TwoStage(torch.device("cpu")).parameters()
    one_mb, eight_mb = resident_mb("one", size), resident_mb("eight", size)
    best_bf16 = max(v for k, v in rates.items() if k.startswith("bf16") and not k.startswith("bf16_batch1_"))
    return {
        "device": str(device),
        "image_size": size,
        **lat,
        "predict_ratio": lat["predict_ms"] / lat["bare_forward_ms"],
        "explain_ratio": lat["predict_explain_ms"] / lat["bare_forward_ms"],
        "runtime_auto": resolve_runtime("auto", device, "auto").name,
        "two_stage_ratio": lat["predict_auto_ms"] / lat["two_stage_ms"],
        "two_stage_explain_ratio": lat["predict_auto_explain_ms"] / lat["two_stage_explain_ms"],
        "two_stage_ratio_torch_fp32": lat["predict_ms"] / lat["two_stage_ms"],
        "two_stage_explain_ratio_torch_fp32": lat["predict_explain_ms"] / lat["two_stage_explain_ms"],
        "throughput": rates,
        "batched_bf16_vs_fp32_batch1": best_bf16 / rates["fp32_batch1_images_per_s"],
        "parameters": {"one_model": one_params, "eight_models": eight_params, "ratio": one_params / eight_params},
        "resident_mb": {"one_model": one_mb[0], "eight_models": eight_mb[0], "ratio": one_mb[0] / eight_mb[0]},
        "resident_after_forward_mb": {
            "one_model": one_mb[1],
            "eight_models": eight_mb[1],
            "ratio": one_mb[1] / eight_mb[1],
        },
        "goals": {
            "predict_ratio": "<= 1.10",
            "explain_ratio": "<= 1.25",
            "two_stage_ratio": "<= 0.55",
            "batched_bf16_vs_fp32_batch1": ">= 3 (where the CPU has bf16)",
            "parameters.ratio": "<= 1/7",
            "resident_mb.ratio": "<= 1/7",
        },
    }
