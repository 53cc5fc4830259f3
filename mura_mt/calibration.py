"""Per-part calibration and decision thresholds: what turns a gated anomaly logit into a verdict.

``Calibration`` travels with the weights (in config.json). Probability of part k's head:
``sigmoid(scale[k] * logit + bias[k])`` (Platt scaling); verdict: probability > ``threshold[k]``.
The identity (scale 1, bias 0, threshold 0.5) is the MURA paper's rule. Fitting uses the val split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mura_mt.labels import BODY_PARTS

_MIN_STUDIES = 50  # per part: below this the paper's rule stays (Platt + threshold on fewer studies overfit: measured)


@dataclass(frozen=True)
class Calibration:
    scale: tuple[float, ...] = field(default_factory=lambda: (1.0,) * len(BODY_PARTS))
    bias: tuple[float, ...] = field(default_factory=lambda: (0.0,) * len(BODY_PARTS))
    threshold: tuple[float, ...] = field(default_factory=lambda: (0.5,) * len(BODY_PARTS))

    def probs(self, anomaly_logits: np.ndarray) -> np.ndarray:
        """[N, 7] logits -> [N, 7] calibrated probabilities (column k by part k's calibration)."""
        z = np.asarray(anomaly_logits, dtype=np.float64) * np.asarray(self.scale) + np.asarray(self.bias)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            p: {"scale": s, "bias": b, "threshold": t}
            for p, s, b, t in zip(BODY_PARTS, self.scale, self.bias, self.threshold)
        }

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, float]]) -> Calibration:
        missing = [p for p in BODY_PARTS if p not in values]
        if missing:
            raise ValueError(f"calibration lacks body part(s) {missing}")
        return cls(*(tuple(float(values[p][k]) for p in BODY_PARTS) for k in ("scale", "bias", "threshold")))


def fit_calibration(
    study_ids: np.ndarray, parts: np.ndarray, labels: np.ndarray, anomaly_logits: np.ndarray
) -> Calibration:
    """Fit calibration on val images, using each image's TRUE-part head logit.

    A part with at least ``_MIN_STUDIES`` val studies (both classes) gets its own Platt scaling and the threshold
    that maximises its study kappa under the decision rule (``decision.decide``, gated by the true part). A
    smaller part gets the Platt scaling pooled over all parts (two parameters fit well on a few hundred images)
    and keeps the paper's 0.5 threshold: a threshold searched on a dozen studies mostly fits their noise
    (measured on the synthetic data: per-part fits lowered held-out kappa).

    Args:
        study_ids, parts, labels: per image (parts as indices into BODY_PARTS).
        anomaly_logits: [N, 7] raw logits.
    """
    import pandas as pd  # fitting happens in training only; serving imports this module without them

    from mura_mt.decision import decide

    frame = pd.DataFrame(
        {"study": study_ids, "part": parts, "label": labels, "z": anomaly_logits[np.arange(len(parts)), parts]}
    )
    pooled = _platt(frame) if _enough(frame) else (1.0, 0.0)
    scale, bias = [pooled[0]] * len(BODY_PARTS), [pooled[1]] * len(BODY_PARTS)
    own = [k for k in range(len(BODY_PARTS)) if _enough(frame[frame["part"] == k])]
    for k in own:
        scale[k], bias[k] = _platt(frame[frame["part"] == k])
    platt = Calibration(tuple(scale), tuple(bias))
    study, _ = pd.factorize(frame["study"])
    first_view = frame.groupby(study).head(1).index.to_numpy()
    study_part, study_label = frame["part"].to_numpy()[first_view], frame["label"].to_numpy()[first_view]
    decided = decide(None, anomaly_logits, study, platt, part_idx=study_part)
    threshold = [0.5] * len(BODY_PARTS)
    for k in own:
        threshold[k] = _best_threshold(decided.probs[study_part == k], study_label[study_part == k])
    return Calibration(tuple(scale), tuple(bias), tuple(threshold))


def _enough(frame) -> bool:
    return frame["study"].nunique() >= _MIN_STUDIES and frame["label"].nunique() == 2


def _platt(frame) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    platt = LogisticRegression(C=100.0).fit(frame[["z"]].to_numpy(), frame["label"].to_numpy())
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def _best_threshold(study_probs: np.ndarray, study_labels: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    grid = np.round(np.arange(0.2, 0.81, 0.05), 2)
    kappas = [cohen_kappa_score(study_labels, study_probs > t) for t in grid]
    # Ties go to the threshold nearest 0.5: a flat kappa curve is no reason to move off the paper's rule.
    best = max(range(len(grid)), key=lambda i: (round(kappas[i], 6), -abs(grid[i] - 0.5)))
    return float(grid[best])
