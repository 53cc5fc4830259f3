"""The bulk block of scripts/benchmark.py: ``predict.py`` on a folder against the same files one by one.

The folder holds fresh synthetic studies twice: as PNG (as MURA ships, about 500 px) and as DICOM CR files at a
detector's size (2,048 px on the longer side, 12-bit; what a PACS sends). Three rates on the same files, medians of
interleaved rounds:

- ``sequential``: ``Predictor.predict`` file after file with the Python defaults (the runtime ``auto`` picks);
- ``bulk``: ``bulk.predict_files`` as ``predict.py`` runs it (decoding in threads beside the model, batches sized
  by the runtime);
- ``model_only``: the runner alone on the preprocessed batches (on all usable cores), and ``decode_only``: decoding
  and preprocessing alone, in one thread. With both kept busy on every core, bulk cannot pass
  ``limit = cores / (1 / decode_only + cores / model_only)``: the physical limit, printed beside it.

``sequential_torch_fp32`` (the Python API's default before int8) is measured too, for continuity.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from mura_mt.data import read_mura_index
from mura_mt.data.synthetic import make_synthetic_mura
from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.hardware import describe_cpu, usable_cores
from mura_mt.inference.bulk import predict_files
from mura_mt.inference.predictor import Predictor

DICOM_LONG_SIDE = 2048


def bulk_files(folder: Path, studies_per_part: int, seed: int = 4242) -> dict[str, list[str]]:
    """Study folder -> files: each fresh synthetic valid study as PNG and again as DICOM."""
    mura_dir = make_synthetic_mura(folder / "png", 1, studies_per_part, seed=seed)
    table = read_mura_index(folder / "png", "valid")
    studies = {str(Path(paths.iloc[0]).parent): paths.tolist() for _, paths in table.groupby("study_id")["path"]}
    for study in write_dicom_studies(mura_dir, folder / "dicom", "valid", seed=seed, long_side=DICOM_LONG_SIDE):
        studies[str(study)] = sorted(str(p) for p in study.glob("*.dcm"))
    return studies


def bulk_block(checkpoint: str, quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="mura-mt-bulk-") as folder:
        studies = bulk_files(Path(folder), 1 if quick else 4)
        paths = [p for views in studies.values() for p in views]
        default = Predictor.from_pretrained(checkpoint)  # what predict.py and the Python API run by default
        fp32 = Predictor.from_pretrained(checkpoint, precision="fp32", runtime="torch")
        batch = default.runner.batch_size
        prepared = [default.prepare(p).x for p in paths]
        batches = [torch.cat(prepared[i : i + batch]) for i in range(0, len(prepared), batch)]

        def rate(work) -> float:
            start = time.perf_counter()
            work()
            return len(paths) / (time.perf_counter() - start)

        variants = {
            "sequential": lambda: [default.predict(p) for p in paths],
            "bulk": lambda: predict_files(default, studies, progress=False),
            "model_only": lambda: [default.runner(x) for x in batches],
            "decode_only": lambda: [default.prepare(p) for p in paths],
            "sequential_torch_fp32": lambda: [fp32.predict(p) for p in paths],
        }
        for work in variants.values():
            rate(work)  # warm-up
        measured: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(1 if quick else 3):  # interleaved: drift on a noisy machine hits every variant alike
            for name, work in variants.items():
                measured[name].append(rate(work))
    rates = {f"{name}_images_per_s": statistics.median(values) for name, values in measured.items()}
    cores = usable_cores()
    limit = cores / (1 / rates["decode_only_images_per_s"] + cores / rates["model_only_images_per_s"])
    return {
        "cpu": describe_cpu(),
        "files": len(paths),
        "png_files": sum(p.endswith(".png") for p in paths),
        "dicom_files": sum(p.endswith(".dcm") for p in paths),
        "dicom_long_side_px": DICOM_LONG_SIDE,
        "runtime": default.runtime,
        "precision": default.precision,
        "batch_size": batch,
        **rates,
        "bulk_vs_sequential": rates["bulk_images_per_s"] / rates["sequential_images_per_s"],
        "limit_images_per_s": limit,
        "limit_vs_sequential": limit / rates["sequential_images_per_s"],
        "bulk_vs_limit": rates["bulk_images_per_s"] / limit,
        "bulk_vs_sequential_torch_fp32": rates["bulk_images_per_s"] / rates["sequential_torch_fp32_images_per_s"],
        "goal": {"bulk_vs_sequential": ">= 2.0"},
    }
