"""A site fits its own: calibration, thresholds and operating points refitted on the site's labelled studies, the
weights unchanged, written as a new checkpoint folder the app and the node serve at once.

The unit is a view with the anomaly logit of the head that decided its study (the model's part, as serving decides):
from the worklist store's answers (each view's calibrated probability, inverted through the old calibration) or
from an ``evaluate.py`` folder's ``image_logits.csv``. Patients are split (``data.index.split_by_patient``): the
held-out share is never seen by the fit and is scored for both checkpoints by the same decision rule
(``decision.decide``), so ``compare.py`` can pair them. Calibration is refitted only for parts with enough studies
(``release.MIN_CALIBRATION_STUDIES``); the others keep the checkpoint's own. The operating points are fitted on the
refitted study probabilities (``inference.operating_points``): Platt scaling is monotone within a part, so the
rule-out's order-statistic guarantee is the same as on the raw scores. Nothing here reads a database or an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mura_mt.data.index import split_by_patient
from mura_mt.evaluation.metrics import binary_metrics
from mura_mt.inference.calibration import Calibration
from mura_mt.inference.checkpoint import CONFIG_NAME, checkpoint_config, resolve_checkpoint
from mura_mt.inference.decision import decide
from mura_mt.inference.operating_points import fit_operating_points, fit_site_wide
from mura_mt.labels import BODY_PARTS, PART_TO_IDX
from mura_mt.training.release import fit_calibration, parts_to_fit

VIEW_COLUMNS = ("study_id", "patient_id", "body_part", "label", "logit")


class SiteCalibrationError(ValueError):
    """The labelled studies cannot carry a refit (none, one class only, or not the checkpoint's answers)."""


def views_from_answers(rows: list[dict], calibration: Calibration) -> pd.DataFrame:
    """``VIEW_COLUMNS`` from the store's labelled answers (``SiteLabels.labelled_answers``): each view's stored
    probability back to its head's logit through the calibration that produced it (the checkpoint's)."""
    records = []
    for row in rows:
        answer = json.loads(row["answer"]) if isinstance(row["answer"], str) else row["answer"]
        part = row["body_part"]
        k = PART_TO_IDX[part]
        for view in (answer or {}).get("views", []):
            p = float(np.clip(view["abnormal_prob"], 1e-12, 1 - 1e-12))
            logit = (np.log(p / (1 - p)) - calibration.bias[k]) / calibration.scale[k]
            patient = row.get("patient_id") or row["study_uid"]  # without an id each study stands alone
            records.append((row["study_uid"], str(patient), part, int(row["label"]), float(logit)))
    return pd.DataFrame.from_records(records, columns=list(VIEW_COLUMNS))


def views_from_evaluation(folder: str | Path) -> pd.DataFrame:
    """``VIEW_COLUMNS`` from an ``evaluate.py`` folder's ``image_logits.csv``: each study gated by its predicted
    part (the mean part probabilities' argmax), as the Predictor gates it."""
    path = Path(folder) / "image_logits.csv"
    if not path.is_file():
        raise SiteCalibrationError(f"{path} is missing: run scripts/evaluate.py (this version) on the site's data")
    frame = pd.read_csv(path, dtype={"study_id": str, "patient_id": str})
    part_logits = frame[[f"part_logit_{p}" for p in BODY_PARTS]].to_numpy(dtype=np.float64)
    anomaly = frame[[f"anomaly_logit_{p}" for p in BODY_PARTS]].to_numpy(dtype=np.float64)
    study, _ = pd.factorize(frame["study_id"])
    part_probs = np.exp(part_logits - part_logits.max(axis=1, keepdims=True))
    part_probs /= part_probs.sum(axis=1, keepdims=True)
    gate = decide(part_probs, anomaly, study, Calibration()).part_idx[study]
    return pd.DataFrame(
        {
            "study_id": frame["study_id"],
            "patient_id": frame["patient_id"],
            "body_part": [BODY_PARTS[k] for k in gate],
            "label": frame["label"].astype(int),
            "logit": anomaly[np.arange(len(frame)), gate],
        }
    )


def study_predictions(views: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """One row per study as ``evaluate.py`` writes it (study_id, body_part, label, prob, pred), by THE decision rule
    with ``calibration``: the form ``compare.py`` pairs."""
    study, uniques = pd.factorize(views["study_id"])
    parts = views["body_part"].map(PART_TO_IDX).to_numpy()
    logits = np.zeros((len(views), len(BODY_PARTS)))
    logits[np.arange(len(views)), parts] = views["logit"].to_numpy()
    first = views.groupby(study).head(1)
    decided = decide(None, logits, study, calibration, part_idx=parts[first.index.to_numpy()])
    return pd.DataFrame(
        {
            "study_id": uniques,
            "body_part": first["body_part"].to_numpy(),
            "label": first["label"].to_numpy().astype(int),
            "prob": decided.probs,
            "pred": decided.is_abnormal.astype(int),
        }
    )


def split_views(views: pd.DataFrame, split_off: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, held out): about ``split_off`` of each part's studies held out, no patient on both sides."""
    if views.empty:
        raise SiteCalibrationError("no labelled studies: labels come back by HL7, the reader's reads or a CSV")
    if split_off == 0:
        return views.reset_index(drop=True), views.iloc[0:0]
    return split_by_patient(views, split_off, seed)


def refit(views: pd.DataFrame, old: Calibration, sensitivity: float = 0.98, ppv: float = 0.90,
          confidence: float = 0.95) -> tuple[Calibration, dict, dict, list[str]]:  # fmt: skip
    """(calibration, operating points per part, the site-wide point, the parts whose calibration was refitted) from
    the fit views."""
    if views.empty:
        raise SiteCalibrationError("no labelled studies to fit on")
    if views["label"].nunique() < 2:
        raise SiteCalibrationError("the labelled studies are all of one class: nothing to calibrate against")
    parts = views["body_part"].map(PART_TO_IDX).to_numpy()
    logits = np.zeros((len(views), len(BODY_PARTS)))
    logits[np.arange(len(views)), parts] = views["logit"].to_numpy()
    frame = pd.DataFrame({"study": views["study_id"], "part": parts, "label": views["label"]})
    refitted = [BODY_PARTS[k] for k in parts_to_fit(frame)]
    calibration = fit_calibration(views["study_id"].to_numpy(), parts, views["label"].to_numpy(), logits, keep=old)
    studies = study_predictions(views, calibration)
    points = fit_operating_points(studies["body_part"], studies["prob"], studies["label"], sensitivity, ppv,
                                  confidence)  # fmt: skip
    for part in BODY_PARTS:  # a part the site has no labels of gets no triage here, and says why
        points.setdefault(part, {"rule_out": None, "rule_in": None, "sensitivity": sensitivity, "ppv": ppv,
                                 "confidence": confidence, "n_studies": 0, "n_abnormal": 0,
                                 "why": "no labelled studies of this part at the site"})  # fmt: skip
    site = fit_site_wide(studies["prob"], studies["label"], sensitivity, ppv, confidence)
    return calibration, dict(sorted(points.items())), site, refitted


def heldout_metrics(studies: pd.DataFrame) -> dict:
    """Study-level metrics overall and per part (``binary_metrics``, as ``evaluate.py`` and the site report)."""
    blocks = {"overall": binary_metrics(None, studies)}
    for part, group in studies.groupby("body_part"):
        blocks[str(part)] = binary_metrics(None, group)
    return blocks


def labels_fingerprint(views: pd.DataFrame) -> str:
    """sha256 of the sorted (study, label) pairs the refit saw: two refits with the same hash used the same labels."""
    pairs = views[["study_id", "label"]].drop_duplicates().astype(str).sort_values(["study_id", "label"])
    lines = "\n".join(f"{study},{label}" for study, label in pairs.itertuples(index=False))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_site_checkpoint(old: str | Path, out: str | Path, calibration: Calibration, operating_points: dict,
                          provenance: dict) -> Path:  # fmt: skip
    """The old checkpoint's files (weights untouched, their hash unchanged) with a config.json that holds the site's
    calibration, operating points and where they came from; written beside ``out`` and renamed into place."""
    source, out = resolve_checkpoint(old), Path(out)
    if out.resolve() == source.resolve():
        raise SiteCalibrationError("--out must be a new folder: the old checkpoint is the baseline compare.py needs")
    config = checkpoint_config(source)
    config["calibration_before_site"] = config.get("calibration")
    config["calibration"] = calibration.to_dict()
    config["operating_points"] = operating_points
    config["site_calibration"] = provenance
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(CONFIG_NAME, "README.md", ".*"))
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def provenance(site: str, window: dict, fit: pd.DataFrame, heldout: pd.DataFrame, old_config: dict, refitted: list,
               seed: int, split_off: float) -> dict:  # fmt: skip
    """What the new checkpoint's thresholds came from, for its config.json and its model card."""
    return {
        "site": site,
        "window": window,
        "fitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_studies_fit": int(fit["study_id"].nunique()),
        "n_studies_heldout": int(heldout["study_id"].nunique()),
        "labels_sha256_fit": labels_fingerprint(fit),
        "labels_sha256_heldout": labels_fingerprint(heldout) if len(heldout) else None,
        "split_off": split_off,
        "seed": seed,
        "calibration_refitted_parts": refitted,
        "from_checkpoint_weights_sha256": old_config.get("weights_sha256"),
    }
