"""The triage groups on an evaluation: what "likely normal" set aside and what it missed, per body part.

For each part (the true part, as the report's tables) and overall: the studies the checkpoint's operating points
(``inference.operating_points``, looked up by the predicted part, as served) call "likely normal", the sensitivity
of everything else with its exact (Clopper-Pearson) 95 % interval, the abnormal studies set aside, and the same for
"likely abnormal" with its positive predictive value; and the operating curve: the sensitivity kept against the
share of studies set aside over every threshold, with the realised point and its intervals. Counts and exact
binomial intervals only (SciPy); the figure is matplotlib (``figures``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from mura_mt.evaluation.figures import Figure, png_bytes
from mura_mt.inference.operating_points import OperatingPoints
from mura_mt.labels import BODY_PARTS

HEADER = ["body part", "studies", "likely normal", "sensitivity outside it [95% CI]", "abnormal set aside",
          "likely abnormal", "PPV [95% CI]", "uncertain"]  # fmt: skip


def with_triage(studies: pd.DataFrame, points: OperatingPoints) -> pd.DataFrame:
    """The studies (predicted gate: study_id, body_part, predicted_part, label, prob) with their ``triage``."""
    groups = [points.triage(part, prob) for part, prob in zip(studies["predicted_part"], studies["prob"])]
    return studies.assign(triage=groups)


def exact_interval(k: int, n: int) -> tuple[float, float] | None:
    """Clopper-Pearson 95 % interval of k successes in n; None when n is 0."""
    if n == 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def triage_summary(studies: pd.DataFrame) -> dict:
    """Per part and overall: counts in each group, the sensitivity outside "likely normal" and the PPV of "likely
    abnormal", each with its exact interval (None where there is nothing to count)."""
    summary = {}
    for part in (*BODY_PARTS, "overall"):
        group = studies if part == "overall" else studies[studies["body_part"] == part]
        if not len(group):
            continue
        normal, abnormal = group["triage"] == "likely normal", group["triage"] == "likely abnormal"
        positives = int(group["label"].sum())
        missed = int((normal & (group["label"] == 1)).sum())
        right = int((abnormal & (group["label"] == 1)).sum())
        summary[part] = {
            "studies": int(len(group)),
            "likely_normal": int(normal.sum()),
            "set_aside_share": float(normal.mean()),
            "abnormal_set_aside": missed,
            "sensitivity": (positives - missed) / positives if positives else None,
            "sensitivity_ci95": exact_interval(positives - missed, positives),
            "likely_abnormal": int(abnormal.sum()),
            "ppv": right / int(abnormal.sum()) if abnormal.any() else None,
            "ppv_ci95": exact_interval(right, int(abnormal.sum())),
            "uncertain": int((group["triage"] == "uncertain").sum()),
        }
    return summary


def _with_interval(value, interval) -> str:
    return "-" if value is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def summary_rows(summary: dict) -> list[list[str]]:
    return [
        [part, str(s["studies"]), f"{s['likely_normal']} ({s['set_aside_share']:.0%})",
         _with_interval(s["sensitivity"], s["sensitivity_ci95"]), str(s["abnormal_set_aside"]),
         str(s["likely_abnormal"]), _with_interval(s["ppv"], s["ppv_ci95"]), str(s["uncertain"])]
        for part, s in summary.items()
    ]  # fmt: skip


def operating_curve_figure(studies: pd.DataFrame, summary: dict, points: OperatingPoints) -> Figure:
    """Sensitivity kept above a threshold against the share of studies below it, every threshold, per part; the
    dot is the checkpoint's rule-out as realised here, with exact intervals; the dashed line its target."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4), sharex=True, sharey=True)
    for ax, part in zip(axes.flat, (*BODY_PARTS, "overall")):
        group = studies if part == "overall" else studies[studies["body_part"] == part]
        ax.set_title(part)
        if group["label"].sum() == 0:
            ax.text(0.5, 0.5, "no abnormal studies", ha="center")
            continue
        probs, positive = group["prob"].to_numpy(), group["label"].to_numpy() == 1
        thresholds = np.unique(np.concatenate([[0.0], probs, [np.nextafter(1.0, 2)]]))
        share = np.array([(probs < t).mean() for t in thresholds])
        kept = np.array([(probs[positive] >= t).mean() for t in thresholds])
        ax.step(share, kept, where="post", lw=1.6)
        target = points.parts.get(part, {}).get("sensitivity") if part != "overall" else None
        if target:
            ax.axhline(target, color="0.5", ls="--", lw=1, label=f"target {target:.0%}")
        s = summary[part]
        if s["likely_normal"] and s["sensitivity"] is not None:
            share_ci = exact_interval(s["likely_normal"], s["studies"])
            sens_ci = s["sensitivity_ci95"]
            ax.errorbar(s["set_aside_share"], s["sensitivity"],
                        xerr=[[s["set_aside_share"] - share_ci[0]], [share_ci[1] - s["set_aside_share"]]],
                        yerr=[[s["sensitivity"] - sens_ci[0]], [sens_ci[1] - s["sensitivity"]]],
                        fmt="o", color="crimson", capsize=3, label="likely normal, realised")  # fmt: skip
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("share of studies set aside")
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity kept")
    caption = (
        "Operating curves per body part (studies, predicted gate): the sensitivity of the studies above a threshold "
        "against the share below it, for every threshold. The dot is the checkpoint's rule-out as it fell on these "
        "studies (its \"likely normal\" group), with exact 95% intervals; the dashed line is the part's target."
    )
    return Figure("operating_curves.png", caption, png_bytes(fig))
