"""Evaluate an exported checkpoint on a split, through the Predictor (the serving path, not the trainer's).

Owns batching images through ``Predictor.preprocess`` and ``Predictor.predict_logits`` and turning the logits
into ``metrics.compute_metrics``. Unreadable images stop the evaluation with a list: a metric computed on a
silently smaller set would not be the metric it claims to be.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mura_mt.imaging.io import InvalidImageError
from mura_mt.evaluation.metrics import compute_metrics
from mura_mt.inference.predictor import Predictor


def predict_table(
    predictor: Predictor, table: pd.DataFrame, batch_size: int = 32, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(part_logits [N, 7], anomaly_logits [N, 7]) for every row of an index table.

    Threads decode and preprocess the next batch while the model runs on the current one."""
    paths = table["path"].tolist()
    failures: dict[str, str] = {}

    def prepare(path: str) -> torch.Tensor | None:
        try:
            return predictor.preprocess(path)
        except InvalidImageError as err:
            failures[path] = str(err)
            return None

    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    parts, anomalies = [], []
    with ThreadPoolExecutor() as pool, tqdm(total=len(paths), desc="evaluate", disable=not progress) as bar:
        pending = [pool.submit(prepare, path) for path in batches[0]] if batches else []
        for i in range(len(batches)):
            current = pending
            pending = [pool.submit(prepare, path) for path in batches[i + 1]] if i + 1 < len(batches) else []
            tensors = [future.result() for future in current]
            if failures:
                first = "; ".join(f"{p}: {why}" for p, why in list(failures.items())[:5])
                raise InvalidImageError(f"{len(failures)} unreadable images; first: {first}")
            out = predictor.predict_logits(torch.cat(tensors))
            parts.append(out.part_logits)
            anomalies.append(out.anomaly_logits)
            bar.update(len(tensors))
    return torch.cat(parts).numpy(), torch.cat(anomalies).numpy()


def evaluate_checkpoint(
    predictor: Predictor,
    table: pd.DataFrame,
    batch_size: int = 32,
    progress: bool = True,
    logits: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Metrics of both gates with the checkpoint's calibration and thresholds, and the study predictions.

    ``logits`` (part, anomaly) from an earlier ``predict_table`` on the same table skip the forward passes."""
    part_logits, anomaly_logits = (
        logits if logits is not None else predict_table(predictor, table, batch_size, progress)
    )
    return compute_metrics(table, part_probabilities(part_logits), anomaly_logits, predictor.calibration)


def image_logits(table: pd.DataFrame, part_logits: np.ndarray, anomaly_logits: np.ndarray) -> pd.DataFrame:
    """Every image's raw logits beside its study, patient, part and label (``image_logits.csv``): what
    ``scripts/calibrate_site.py --eval`` refits a site's calibration on."""
    from mura_mt.labels import BODY_PARTS

    frame = table[["path", "study_id", "patient_id", "body_part", "label"]].reset_index(drop=True).copy()
    for k, part in enumerate(BODY_PARTS):
        frame[f"part_logit_{part}"] = part_logits[:, k]
    for k, part in enumerate(BODY_PARTS):
        frame[f"anomaly_logit_{part}"] = anomaly_logits[:, k]
    return frame


def part_probabilities(part_logits: np.ndarray) -> np.ndarray:
    """Softmax of the part head, as the Predictor computes it (float32)."""
    return torch.softmax(torch.from_numpy(part_logits).float(), dim=1).numpy()


def split_fingerprint(table: pd.DataFrame) -> str:
    """sha256 of the split's sorted (study, label) pairs: two evaluations with the same fingerprint scored the same
    studies against the same labels (``scripts/compare.py`` prints it)."""
    import hashlib

    pairs = table[["study_id", "label"]].drop_duplicates().astype(str).sort_values(["study_id", "label"])
    lines = "\n".join(f"{study},{label}" for study, label in pairs.itertuples(index=False))
    return hashlib.sha256(lines.encode()).hexdigest()
