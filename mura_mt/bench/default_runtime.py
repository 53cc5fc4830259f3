"""The default block of scripts/benchmark.py: what ``Predictor.from_pretrained(ckpt)`` (and ``--runtime auto``)
serves on this CPU, against PyTorch fp32, on images the checkpoint never saw.

- Speed: ``predict`` with Grad-CAM at batch 1 on decoded images, interleaved rounds, medians per image; beside it
  the model alone in each runtime (the runner's forward: the physical limit of the answer).
- Agreement: the int8 gate's figures (``quantize.accuracy_record``) on a fresh synthetic tree (another seed than
  the demo's), and body part and verdict agreement on the real radiographs of pydicom-data (CRs of a chest and a
  lower leg, and views derived from them).
- The honest demo's warnings (``bench.ood.measure_warnings``) in both runtimes: warned real radiographs, warned
  non-musculoskeletal images, false warnings on fresh synthetic views.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mura_mt.bench.ood import measure_warnings, public_images, radiograph_views
from mura_mt.data import read_mura_index
from mura_mt.data.synthetic import make_synthetic_mura
from mura_mt.evaluation.evaluate import evaluate_checkpoint
from mura_mt.hardware import describe_cpu
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.quantize import accuracy_record

FRESH_SEED = 9173  # the demo trained on seed 0


def fresh_tree(folder: str | Path, quick: bool = False) -> Path:
    """Synthetic studies the demo never saw (another seed): 25 valid studies per part (175), 10 train."""
    make_synthetic_mura(folder, 1 if quick else 10, 2 if quick else 25, seed=FRESH_SEED)
    return Path(folder)


def agreement(default: Predictor, fp32: Predictor, table: pd.DataFrame, source: str) -> dict:
    """The int8 gate's figures (``quantize.accuracy_record``) of ``default`` against ``fp32`` on ``table``."""
    paths = table["path"].tolist()
    results = [evaluate_checkpoint(p, table, progress=False) for p in (fp32, default)]
    views = [p.predict_batch(paths, explain=True) for p in (fp32, default)]
    return accuracy_record(*results, *views, table["body_part"].tolist(), source)


def default_block(checkpoint: Path, quick: bool) -> dict:
    default = Predictor.from_pretrained(checkpoint)
    fp32 = Predictor.from_pretrained(checkpoint, precision="fp32", runtime="torch")
    with tempfile.TemporaryDirectory(prefix="mura-mt-default-") as folder:
        fresh_tree(folder, quick)
        table = read_mura_index(folder, "valid")
        fresh = [str(p) for split in ("train", "valid") for p in read_mura_index(folder, split)["path"]]
        speed = _latencies(default, fp32, table["path"].tolist()[: 8 if quick else 48], 1 if quick else 3)
        agreed = agreement(default, fp32, table, f"fresh synthetic seed {FRESH_SEED}")
        warnings = {p.runtime: measure_warnings(p, fresh) for p in (fp32, default)}
    images = public_images()
    radiographs = [images[name] for name in images if name.startswith("radiograph ")]
    radiographs += radiograph_views([images["radiograph RG1_UNCR"], images["radiograph RG3_UNCR"]])
    real = [p.predict_batch(radiographs) for p in (fp32, default)]
    return {
        "cpu": describe_cpu(),
        "runtime": default.runtime,
        "precision": default.precision,
        "why": default.runner.why,
        "latency_ms": speed,
        "default_explain_vs_torch_fp32_explain": speed["default_explain"] / speed["torch_fp32_explain"],
        "goal": {"default_explain_vs_torch_fp32_explain": "<= 0.6 on a VNNI CPU"},
        "fresh_synthetic": {k: v for k, v in agreed.items() if k != "gate"},
        "real_radiographs": {
            "views": len(radiographs),
            "part_agreement": float(np.mean([a.body_part == b.body_part for a, b in zip(*real)])),
            "verdict_agreement": float(np.mean([a.is_abnormal == b.is_abnormal for a, b in zip(*real)])),
        },
        "warnings": {runtime: _warned(w) for runtime, w in warnings.items()},
    }


def _warned(measured: dict) -> dict:
    """``measure_warnings``' shares, the per-image detail left out."""
    images = measured["images"].values()
    return {k: v for k, v in measured.items() if k not in ("images", "radiograph_scores")} | {
        "non_musculoskeletal_warned": sum(item["warned"] for item in images),
        "non_musculoskeletal": len(images),
    }


def _latencies(default: Predictor, fp32: Predictor, paths: list[str], rounds: int) -> dict[str, float]:
    """Per image, ms: each predictor's ``predict`` with and without Grad-CAM, and its runner alone."""
    images = [default.prepare(p) for p in paths]
    variants = {
        "default_explain": lambda image: default.predict(image, explain=True),
        "torch_fp32_explain": lambda image: fp32.predict(image, explain=True),
        "default": lambda image: default.predict(image),
        "torch_fp32": lambda image: fp32.predict(image),
        "default_model_only": lambda image: default.runner(image.x),
        "torch_fp32_model_only": lambda image: fp32.runner(image.x),
    }
    measured: dict[str, list[float]] = {name: [] for name in variants}
    for name, run in variants.items():
        run(images[0])  # warm-up
    for _ in range(rounds):  # interleaved: drift on a noisy machine hits every variant alike
        for image in images:
            for name, run in variants.items():
                start = time.perf_counter()
                run(image)
                measured[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in measured.items()}
