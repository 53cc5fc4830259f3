"""ONNX graphs of a checkpoint: python scripts/export_onnx.py --checkpoint CKPT [--data-root ROOT --int8].

Without --int8: exports (or finds) the fp32 graph in the ONNX cache, keyed by the weights' sha256, and prints its
path; `--runtime onnx` does the same on first use, so this only saves that second at a server's first start.

With --int8: calibrates a static int8 graph on the checkpoint's OWN val images (the patient split recorded in its
config.json, rebuilt from the MURA tree at ROOT), writes it beside the weights as model.int8.onnx, then measures it
against fp32 PyTorch on --check-split (default: the official valid split): study kappa and AUROC (overall,
predicted gate) within 0.01, body-part accuracy within 0.5 %, Grad-CAM maps with cosine >= 0.98 (every view fp32
calls abnormal, and 95 % of all views; see mura_mt/inference/quantize.py for why not every normal one). The
measurement, the calibration and the file's sha256 go into config.json ("onnx_int8"); `--runtime onnx-int8` serves
the graph only when that record says it passed.
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

from mura_mt.data import read_mura_index, split_by_patient
from mura_mt.evaluation.evaluate import evaluate_checkpoint
from mura_mt.inference.checkpoint import CONFIG_NAME, file_sha256, load_checkpoint, resolve_checkpoint
from mura_mt.inference.onnx_graph import INT8_FILE, cached_graph
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.quantize import accuracy_record, quantize_graph
from mura_mt.inference.runners import OnnxRunner


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--int8", action="store_true", help="calibrate, check and record an int8 graph")
    parser.add_argument("--data-root", help="the MURA tree the checkpoint was trained on (needed with --int8)")
    parser.add_argument("--check-split", default="valid", choices=["train", "valid"], help="where int8 is measured")
    parser.add_argument("--calibration-images", type=int, default=512, help="val images that set the int8 ranges")
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
    calibration_paths = val_images(config, args.data_root, args.calibration_images)
    batches = (
        torch.cat([reference.preprocess(p) for p in calibration_paths[i : i + args.batch_size]]).numpy()
        for i in range(0, len(calibration_paths), args.batch_size)
    )
    int8_file = directory / INT8_FILE
    recipe = quantize_graph(
        graph, int8_file, tqdm(batches, desc="calibrate", total=-(-len(calibration_paths) // args.batch_size))
    )
    recipe["split"] = "val (the checkpoint's patient split of the official train set)"

    table = read_mura_index(args.data_root, args.check_split)
    int8 = Predictor(model, reference.serving, ood=reference.ood, runner=OnnxRunner(int8_file, model, "onnx-int8"))
    fp32_metrics, _ = evaluate_checkpoint(reference, table, args.batch_size)
    int8_metrics, _ = evaluate_checkpoint(int8, table, args.batch_size)
    views = [explained(p, table["path"].tolist(), args.batch_size) for p in (reference, int8)]
    accuracy = accuracy_record(fp32_metrics, int8_metrics, *views, f"{args.data_root}:{args.check_split}")
    record = {
        "file": INT8_FILE,
        "sha256": file_sha256(int8_file),
        "weights_sha256": config["weights_sha256"],
        "calibration": recipe,
        "accuracy": accuracy,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else "export_onnx.main",
    }
    write_config(directory, {**config, "onnx_int8": record})
    print(json.dumps(accuracy, indent=2))
    verdict = "PASSED: --runtime onnx-int8 may serve it" if accuracy["passed"] else "FAILED: it will not be served"
    print(f"int8 graph {int8_file} ({int8_file.stat().st_size / 2**20:.1f} MiB): accuracy check {verdict}")
    return record


def val_images(config: dict, data_root: str, limit: int) -> list[str]:
    """Up to ``limit`` images of the checkpoint's val split (seeded sample), rebuilt from its recorded config."""
    data = config.get("train_config", {}).get("data", {})
    if "val_fraction" not in data:
        raise SystemExit("config.json records no train_config.data.val_fraction: cannot rebuild the val split")
    _, val = split_by_patient(read_mura_index(data_root, "train"), data["val_fraction"], data.get("split_seed", 0))
    paths = val["path"].tolist()
    chosen = np.random.default_rng(0).permutation(len(paths))[:limit]
    return [paths[i] for i in sorted(chosen)]


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
