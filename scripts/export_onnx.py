"""ONNX graphs of a checkpoint: python scripts/export_onnx.py --checkpoint CKPT [--data-root ROOT --int8].

Without --int8: exports (or finds) the fp32 graph in the ONNX cache, keyed by the weights' sha256, and prints its
path; `--runtime onnx` does the same on first use, so this only saves that second at a server's first start.

With --int8 (ROOT: the MURA tree the checkpoint was trained on; its patient split is rebuilt from config.json):
1. calibrates a static int8 graph on the checkpoint's TRAINING images and writes it beside the weights
   (model.int8.onnx);
2. fits the "unlike the training images" warning again on the int8 graph's own features of the val split
   (ood.int8.safetensors: the warning keeps its false-alarm rate where int8 serves) and the drift monitor's
   reference on its answers (drift_reference.onnx-int8.json);
3. gates it against fp32 PyTorch on --check-split (default: the official valid split): body part agreement
   >= 99.5 % of images, study verdict agreement >= 99 % of studies, study AUROC within 0.005, study kappa and the
   body-part head's kappa within 0.01, Grad-CAM maps close (mura_mt/inference/quantize.py).
Every figure goes into config.json ("onnx_int8") and the model card (README.md); `--runtime auto` serves the
graph on x86 CPUs only when that record says the gate passed, `--runtime onnx-int8` only then too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import pandas as pd
from safetensors.torch import save_file

from mura_mt.data import read_mura_index, split_by_patient
from mura_mt.evaluation.drift import reference_from_predictor, write_reference
from mura_mt.evaluation.evaluate import evaluate_checkpoint
from mura_mt.evaluation.model_card import INT8_HEADING, int8_section
from mura_mt.inference.explain import pooled_by_average
from mura_mt.inference.checkpoint import CONFIG_NAME, file_sha256, load_checkpoint, resolve_checkpoint
from mura_mt.inference.onnx_graph import INT8_FILE, INT8_OOD_FILE, INT8_REFERENCE_FILE, cached_graph
from mura_mt.inference.ood import OodFeatures, OutOfDistribution, fit_out_of_distribution
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.quantize import accuracy_record, quantize_graph
from mura_mt.inference.runners import OnnxRunner


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--int8", action="store_true", help="calibrate, check and record an int8 graph")
    parser.add_argument("--data-root", help="the MURA tree the checkpoint was trained on (needed with --int8)")
    parser.add_argument("--check-split", default="valid", choices=["train", "valid"], help="where int8 is measured")
    parser.add_argument("--calibration-images", type=int, default=512, help="train images that set the int8 ranges")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    directory = resolve_checkpoint(args.checkpoint)
    model, config = load_checkpoint(directory)
    size = int(config["preprocessing"]["image_size"])
    graph = cached_graph(model, config["weights_sha256"], size)
    print(f"fp32 graph: {graph}")
    if not args.int8:
        return {"fp32_graph": str(graph)}
    if not args.data_root:
        parser.error("--int8 needs --data-root: it calibrates on the checkpoint's own val images")

    reference = Predictor.from_pretrained(directory, precision="fp32", runtime="torch")
    train, val = patient_split(config, args.data_root)
    calibration_paths = sample(train["path"].tolist(), args.calibration_images)
    batches = (
        torch.cat([reference.preprocess(p) for p in calibration_paths[i : i + args.batch_size]]).numpy()
        for i in range(0, len(calibration_paths), args.batch_size)
    )
    int8_file = directory / INT8_FILE
    recipe = quantize_graph(
        graph, int8_file, tqdm(batches, desc="calibrate", total=-(-len(calibration_paths) // args.batch_size))
    )
    recipe["split"] = "train (the checkpoint's patient split of the official train set)"

    runner = OnnxRunner(int8_file, model, "onnx-int8")
    ood, ood_record = fit_int8_warning(reference, runner, val, config, directory, args.batch_size)
    int8 = Predictor(model, reference.serving, ood=ood, runner=runner)
    drift_file = write_reference(directory, reference_from_predictor(int8, val), INT8_REFERENCE_FILE)

    table = read_mura_index(args.data_root, args.check_split)
    results = [evaluate_checkpoint(p, table, args.batch_size) for p in (reference, int8)]
    views = [explained(p, table["path"].tolist(), args.batch_size) for p in (reference, int8)]
    accuracy = accuracy_record(*results, *views, table["body_part"].tolist(), f"{args.data_root}:{args.check_split}")
    record = {
        "file": INT8_FILE,
        "sha256": file_sha256(int8_file),
        "weights_sha256": config["weights_sha256"],
        # Grad-CAM from the forward holds for these heads: an int8 server need not build the network to check it.
        "cam_from_forward": pooled_by_average(model),
        "calibration": recipe,
        "ood": ood_record,
        "drift_reference": {"file": drift_file.name, "sha256": file_sha256(drift_file)},
        "accuracy": accuracy,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else "export_onnx.main",
    }
    write_config(directory, {**config, "onnx_int8": record})
    write_card_section(directory / "README.md", int8_section(record))
    print(json.dumps(accuracy, indent=2))
    verdict = "PASSED: --runtime auto serves it on x86 CPUs" if accuracy["passed"] else "FAILED: it will not be served"
    print(f"int8 graph {int8_file} ({int8_file.stat().st_size / 2**20:.1f} MiB): accuracy gate {verdict}")
    return record


def patient_split(config: dict, data_root: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The checkpoint's own train and val images, rebuilt from the split recorded in its config.json."""
    data = config.get("train_config", {}).get("data", {})
    if "val_fraction" not in data:
        raise SystemExit("config.json records no train_config.data.val_fraction: cannot rebuild the val split")
    return split_by_patient(read_mura_index(data_root, "train"), data["val_fraction"], data.get("split_seed", 0))


def sample(paths: list[str], limit: int) -> list[str]:
    """Up to ``limit`` of ``paths``, a seeded sample in their order."""
    chosen = np.random.default_rng(0).permutation(len(paths))[:limit]
    return [paths[i] for i in sorted(chosen)]


def fit_int8_warning(reference: Predictor, runner: OnnxRunner, val: pd.DataFrame, config: dict, directory: Path,
                     batch_size: int) -> tuple[OutOfDistribution, dict]:  # fmt: skip
    """The warning fitted as training fits it (same false-alarm rate, k and bank size), on the int8 graph's
    features of the val split; saved beside the weights. Returns it and its config.json entry."""
    pooled, style = [], []
    paths = val["path"].tolist()
    for start in tqdm(range(0, len(paths), batch_size), desc="int8 features of val"):
        forward = runner(torch.cat([reference.preprocess(p) for p in paths[start : start + batch_size]]))
        pooled.append(forward.pooled)
        style.append(forward.style)
    shipped = config.get("ood", {})
    bank = config.get("train_config", {}).get("train", {}).get("ood_bank_size", 4096)
    ood = fit_out_of_distribution(
        OodFeatures(torch.cat(pooled), torch.cat(style)),
        val["study_id"].to_numpy(),
        shipped.get("val_false_alarm_rate", 0.02),
        k=shipped.get("k", 1),
        max_bank=bank,
    )
    path = directory / INT8_OOD_FILE
    partial = path.with_name(f".{path.name}.tmp")
    save_file(ood.to_tensors(), str(partial))
    partial.chmod(0o644)  # as the weights beside it (safetensors writes it owner-only)
    partial.replace(path)  # never half a file
    return ood, {
        "file": path.name,
        "sha256": file_sha256(path),
        "fitted_on": f"the int8 graph's features of {len(paths)} val images",
        "k": ood.k,
        "bank_size": len(ood.bank),
        "thresholds": {"knn": float(ood.thresholds[0]), "style": float(ood.thresholds[1])},
        "val_false_alarm_rate": ood.false_alarm_rate,
    }


def write_card_section(card: Path, section: str) -> None:
    """Put ``section`` (which starts with its heading) at the end of the model card, replacing an older one."""
    text = card.read_text() if card.is_file() else ""
    if INT8_HEADING in text:
        text = text[: text.index(INT8_HEADING)]
    card.write_text(f"{text.rstrip()}\n\n{section}\n".lstrip())


def explained(predictor: Predictor, paths: list[str], batch_size: int) -> list:
    """Every view's prediction with its Grad-CAM map, each gated by its own predicted part."""
    views = []
    for start in tqdm(range(0, len(paths), batch_size), desc=f"Grad-CAM ({predictor.runtime})"):
        views += predictor.predict_batch(paths[start : start + batch_size], explain=True)
    return views


def write_config(directory: Path, config: dict) -> None:
    """Replace config.json atomically (the weights and their hash are untouched)."""
    tmp = directory / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, directory / CONFIG_NAME)


if __name__ == "__main__":
    main()
