"""Operating points with a finite-sample guarantee (Learn-then-Test), fitted on labelled study probabilities.

- ``rule_out_threshold``: the largest threshold t such that, with probability at least ``confidence`` over the
  calibration studies, the sensitivity of "probability >= t" on new studies is at least ``sensitivity``; studies
  below t are "likely normal". The candidates are the abnormal studies' own probabilities, taken in increasing order
  (fixed-sequence testing, so no multiplicity correction): the share of abnormal studies that fall below the j-th
  smallest abnormal probability is distributed as Beta(j, n - j + 1), so that threshold misses more than
  1 - ``sensitivity`` with probability exactly BinomCDF(j - 1; n, 1 - ``sensitivity``), the p-value of each test.
  With n abnormal studies, any rule-out needs (1 - (1 - sensitivity))^n <= 1 - confidence: 148 abnormal studies at
  0.98 and 0.95. Fewer: None, and the caller says so.
- ``rule_in_threshold``: the smallest threshold t on a fixed grid (0.50, 0.55, ..., 0.95) such that, with the same
  confidence, the positive predictive value of "probability >= t" is at least ``ppv``: each grid point gets the
  binomial p-value of its false positives among the studies at or above it, and the grid is Bonferroni-corrected
  (10 points), which, unlike a fixed sequence from the top, does not stop at a sparse first point.

The assumption behind both: the calibration studies and the studies that follow are exchangeable (the same site,
the same mix, the same model). Pure NumPy/SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

RULE_IN_GRID = np.round(np.arange(0.50, 1.00, 0.05), 2)  # 10 points: a finer grid pays more Bonferroni
TRIAGE = ("likely abnormal", "uncertain", "likely normal")


def _checked(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 1:
        raise ValueError(f"probs and labels must be 1-D arrays of one length; got {probs.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError("probs must be probabilities in [0, 1]")
    return probs, labels.astype(int)


def _target(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1); got {value}")


def rule_out_threshold(probs, labels, sensitivity: float = 0.98, confidence: float = 0.95) -> float | None:
    """The largest threshold below which studies may be called "likely normal" with the guarantee; None when the
    abnormal studies are too few for any."""
    probs, labels = _checked(probs, labels)
    _target("sensitivity", sensitivity)
    _target("confidence", confidence)
    positives = np.sort(probs[labels == 1])
    n = len(positives)
    if n == 0:
        return None
    # p-value of "t = j-th smallest abnormal probability misses too many" is BinomCDF(j - 1; n, 1 - sensitivity),
    # increasing in j: the fixed sequence certifies exactly the j with that p-value <= 1 - confidence.
    p_values = stats.binom.cdf(np.arange(n), n, 1 - sensitivity)
    certified = np.flatnonzero(p_values <= 1 - confidence)
    if len(certified) == 0:
        return None
    return float(positives[certified[-1]])


def rule_in_threshold(probs, labels, ppv: float = 0.90, confidence: float = 0.95) -> float | None:
    """The smallest grid threshold at or above which studies may be called "likely abnormal" with the guarantee;
    None when no grid point carries it."""
    probs, labels = _checked(probs, labels)
    _target("ppv", ppv)
    _target("confidence", confidence)
    level = (1 - confidence) / len(RULE_IN_GRID)
    certified = []
    for t in RULE_IN_GRID:
        above = probs >= t
        m = int(above.sum())
        if m == 0:
            continue
        false = int((labels[above] == 0).sum())
        if stats.binom.cdf(false, m, 1 - ppv) <= level:
            certified.append(float(t))
    return min(certified) if certified else None


def triage(prob: float, rule_out: float | None, rule_in: float | None) -> str:
    """"likely normal" below rule_out, "likely abnormal" at or above rule_in, else "uncertain"."""
    if rule_in is not None and prob >= rule_in:
        return "likely abnormal"
    if rule_out is not None and prob < rule_out:
        return "likely normal"
    return "uncertain"


def with_warnings(group: str | None, warnings: list[str]) -> str | None:
    """A warned answer is never "likely normal" (it becomes "uncertain"): the guarantee holds for studies like the
    calibration studies, and a warning says this one may not be (unlike the training images, the part in doubt)."""
    return "uncertain" if group == "likely normal" and warnings else group


@dataclass(frozen=True)
class OperatingPoints:
    """A checkpoint's fitted operating points (config.json ``operating_points``), per body part; a part that has
    none triages every study as "uncertain"."""

    parts: dict[str, dict]

    @classmethod
    def from_config(cls, config: dict | None) -> OperatingPoints | None:
        """From config.json's ``operating_points`` (None, as for checkpoints exported before they existed: None)."""
        if not config:
            return None
        return cls({part: dict(fitted) for part, fitted in config.get("parts", {}).items()})

    def triage(self, part: str, prob: float) -> str:
        fitted = self.parts.get(part, {})
        return triage(prob, fitted.get("rule_out"), fitted.get("rule_in"))

    def meaning(self, part: str, group: str) -> str:
        """What the group promises for this part, in one sentence a reader can check against the checkpoint."""
        fitted = self.parts.get(part, {})
        if group == "likely normal":
            return (f"below the {part} rule-out threshold {fitted['rule_out']:.3f}, which kept a sensitivity of at "
                    f"least {fitted['sensitivity']:.0%} with {fitted['confidence']:.0%} confidence on "
                    f"{fitted['n_studies']} calibration studies")  # fmt: skip
        if group == "likely abnormal":
            return (f"at or above the {part} rule-in threshold {fitted['rule_in']:.2f}, which kept a positive "
                    f"predictive value of at least {fitted['ppv']:.0%} with {fitted['confidence']:.0%} confidence on "
                    f"{fitted['n_studies']} calibration studies")  # fmt: skip
        return fitted.get("why") or f"between the {part} rule-out and rule-in thresholds"


def fit_operating_points(parts, probs, labels, sensitivity: float = 0.98, ppv: float = 0.90,
                         confidence: float = 0.95) -> dict:  # fmt: skip
    """Per body part: ``rule_out`` and ``rule_in`` (None where the part's studies cannot carry the guarantee, with
    ``why``), the targets, the confidence and the counts they were fitted on."""
    parts, probs, labels = np.asarray(parts), np.asarray(probs, dtype=float), np.asarray(labels, dtype=int)
    fitted = {}
    for part in sorted(set(parts.tolist())):
        inside = parts == part
        p, y = probs[inside], labels[inside]
        rule_out, rule_in = rule_out_threshold(p, y, sensitivity, confidence), rule_in_threshold(p, y, ppv, confidence)
        why = []
        if rule_out is None:
            why.append(f"no rule-out: {int(y.sum())} abnormal studies cannot carry sensitivity {sensitivity} at "
                       f"confidence {confidence}")  # fmt: skip
        if rule_in is None:
            why.append(f"no rule-in: no grid threshold carries PPV {ppv} at confidence {confidence}")
        fitted[part] = {"rule_out": rule_out, "rule_in": rule_in, "sensitivity": sensitivity, "ppv": ppv,
                        "confidence": confidence, "n_studies": int(inside.sum()), "n_abnormal": int(y.sum()),
                        "why": "; ".join(why)}  # fmt: skip
    return fitted
