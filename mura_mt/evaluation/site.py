"""A site's own evidence: its labelled answers scored by the SAME metrics, bootstrap and report pieces as
``evaluate.py --report`` (``metrics.binary_metrics``, ``bootstrap.group_intervals``, ``report``'s figures and
tables), at the study level, which is all a node keeps. The studies come from the worklist store
(``site.labels.SiteLabels.labelled_answers``, read by ``scripts/site_report.py`` and the Performance tab);
nothing here touches a database or DICOM.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mura_mt.evaluation.bootstrap import DEFAULT_RESAMPLES, counted_intervals, group_intervals
from mura_mt.evaluation.metrics import binary_metrics
from mura_mt.labels import BODY_PARTS

MIN_STUDIES = 20  # below this a figure is shown with its interval and "too few to judge", never bare
# Up to this many studies a group's resamples are drawn study by study (a [resamples, studies] matrix: 8 MB at 1,000
# resamples); above it, as counts (bootstrap.counted_intervals): a year's labels fit in the same memory as a week's.
EXACT_BOOTSTRAP_MAX = 1000
TOO_FEW = "too few to judge"
SITE_METRICS = ("study_kappa", "study_auroc", "sensitivity", "specificity", "accuracy")
COLUMNS = ("study_id", "accession", "received", "body_part", "predicted_part", "label", "prob", "pred", "label_source",
           "label_author")  # fmt: skip


def site_studies(rows: list[dict]) -> pd.DataFrame:
    """Labelled answers (``labelled_answers`` rows) -> one row per study: the body part is the label's when the
    reader named one (a corrected part), else the model's (``predicted_part``); ``prob`` and ``pred`` are the
    answer the node gave (calibrated, gated, at its threshold)."""
    table = pd.DataFrame(
        {
            "study_id": [r["study_uid"] for r in rows],
            "accession": [r["accession"] or "" for r in rows],
            "received": [float(r["received"]) for r in rows],
            "body_part": [r["label_body_part"] or r["body_part"] for r in rows],
            "predicted_part": [r["body_part"] for r in rows],
            "label": [int(r["label"]) for r in rows],
            "prob": [float(r["abnormal_prob"]) for r in rows],
            "pred": [int(bool(r["is_abnormal"])) for r in rows],
            "label_source": [r["label_source"] for r in rows],
            "label_author": [r["label_author"] for r in rows],
        },
        columns=list(COLUMNS),
    )
    return table


def site_studies_from_columns(part, prob, pred, label, source: str = "any") -> pd.DataFrame:
    """The same table from columns of numbers (``SiteLabels._scores``: the body part as its index in BODY_PARTS, the
    label's where it names one; -1 for none), without the identifying columns, ``received`` and ``predicted_part``
    (empty): what the Performance tab and /performance need, for a year of labels."""
    n = len(prob)
    body_part = pd.Categorical.from_codes(np.asarray(part, dtype=np.int8), categories=list(BODY_PARTS))
    return pd.DataFrame(
        {
            "study_id": np.full(n, "", dtype=object),
            "accession": np.full(n, "", dtype=object),
            "received": np.full(n, np.nan),
            "body_part": body_part,
            "predicted_part": np.full(n, "", dtype=object),  # not read: the figures use the part above
            "label": np.asarray(label, dtype=int),
            "prob": np.asarray(prob, dtype=float),
            "pred": np.asarray(pred, dtype=bool).astype(int),
            "label_source": np.full(n, source, dtype=object),
            "label_author": np.full(n, "", dtype=object),
        },
        columns=list(COLUMNS),
    )


def site_metrics(studies: pd.DataFrame, answered: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """``overall`` and one block per body part with ``study_kappa``, ``study_auroc``, ``sensitivity``,
    ``specificity``, ``accuracy``, each with ``_ci95`` (studies resampled), ``n_studies``, ``n_positive`` and
    ``judgement``; plus ``coverage`` (labelled of ``answered``), ``agreement`` (model and label) and ``bootstrap``."""
    rng = np.random.default_rng(seed)
    metrics: dict = {"overall": _block(studies, n_resamples, rng)}
    for part in BODY_PARTS:
        group = studies[studies["body_part"] == part]
        if len(group):
            metrics[part] = _block(group, n_resamples, rng)
    agree = int((studies["pred"] == studies["label"]).sum())
    metrics["coverage"] = {
        "labelled": int(len(studies)),
        "answered": int(answered),
        "share": len(studies) / answered if answered else None,
    }
    metrics["agreement"] = {
        "agree": agree,
        "disagree": int(len(studies) - agree),
        "share": agree / len(studies) if len(studies) else None,
    }
    metrics["bootstrap"] = {"resamples": n_resamples, "seed": seed, "unit": "study", "interval": "percentile 95%",
                            "drawn_as_counts_above": EXACT_BOOTSTRAP_MAX}  # fmt: skip
    return metrics


def _block(group: pd.DataFrame, n_resamples: int, rng: np.random.Generator) -> dict:
    group = group.reset_index(drop=True)
    full = binary_metrics(None, group)
    block = {name: full[name] for name in SITE_METRICS}
    if not len(group):
        intervals = {}
    elif len(group) <= EXACT_BOOTSTRAP_MAX:
        intervals = group_intervals(None, group, n_resamples, rng)
    else:
        intervals = counted_intervals(group, n_resamples, rng)
    for name in SITE_METRICS:
        block[f"{name}_ci95"] = intervals.get(name)
    block["n_studies"] = int(len(group))
    block["n_positive"] = int(group["label"].sum())
    block["judgement"] = TOO_FEW if len(group) < MIN_STUDIES else "enough to judge"
    return block


def disagreements(studies: pd.DataFrame) -> pd.DataFrame:
    """The studies where the model and the label disagree, the most confident mistakes first."""
    wrong = studies[studies["pred"] != studies["label"]]
    confidence = (wrong["prob"] - 0.5).abs()
    return wrong.assign(_c=confidence).sort_values("_c", ascending=False).drop(columns="_c")

