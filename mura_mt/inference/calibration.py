"""Per-part calibration and decision thresholds: what turns a gated anomaly logit into a verdict.

``Calibration`` travels with the weights (in config.json). Probability of part k's head:
``sigmoid(scale[k] * logit + bias[k])`` (Platt scaling); verdict: probability > ``threshold[k]``.
The identity (scale 1, bias 0, threshold 0.5) is the MURA paper's rule. Fitting on the val split lives in
``release.fit_calibration`` (it decides with ``decision.decide``, which uses this class: one direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mura_mt.labels import BODY_PARTS


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
