"""Operating points with a finite-sample guarantee (Learn-then-Test), fitted on labelled study probabilities.

- ``rule_out_threshold``: the largest threshold t such that, with probability at least ``confidence`` over the
  calibration studies, the sensitivity of "probability >= t" on new studies is at least ``sensitivity``; studies
  below t are "likely normal". The candidates are the abnormal studies' own probabilities, taken in increasing order
  (fixed-sequence testing, so no multiplicity correction): the share of abnormal studies that fall below the j-th
  smallest abnormal probability is distributed as Beta(j, n - j + 1), so that threshold misses more than
  1 - ``sensitivity`` with probability exactly BinomCDF(j - 1; n, 1 - ``sensitivity``), the p-value of each test.
  With n abnormal studies, any rule-out needs (1 - (1 - sensitivity))^n <= 1 - confidence: 149 abnormal studies at
  0.98 and 0.95. Fewer: None, and the caller says so.
- ``rule_in_threshold``: the smallest threshold t such that, with the same confidence, the positive predictive value
  of "probability >= t" is at least ``ppv``. The candidates are the studies' own probabilities from the top down, a
  fixed sequence (no multiplicity correction): each gets the binomial p-value of its false positives among the
  studies at or above it, and the sequence stops at the first that fails. It starts where enough studies lie above
  the threshold to pass with one false positive among them (46 at PPV 0.90 and 0.95 confidence): a number fixed by
  the target and the confidence, never by the labels, so the order stays fixed and the guarantee holds, and a single
  unlucky normal study at the very top does not end the sequence before it begins. Measured against the 10-point
  Bonferroni grid it replaces (tests/test_operating_points.py, 400 calibration sets of 400 studies): found in 0.983
  of the sets (the grid: 0.745), the PPV target missed in 0.035 (allowed 0.05; the grid: 0.003), keeping 0.83 of the
  abnormal studies the true threshold keeps (the grid: 0.71).

The assumption behind both: the calibration studies and the studies that follow are exchangeable (the same site,
the same mix, the same model). Pure NumPy/SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULE_IN_TOLERATED = 1  # false positives the first tested threshold may show and still pass
TRIAGE = ("likely abnormal", "uncertain", "likely normal")


def _binom_cdf(k, n, p):
    """SciPy's binomial CDF, imported when first needed: serving imports this module, and ``scipy.stats`` is 0.4 s of
    the app's cold start."""
    from scipy import stats

    return stats.binom.cdf(k, n, p)


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
    p_values = _binom_cdf(np.arange(n), n, 1 - sensitivity)
    certified = np.flatnonzero(p_values <= 1 - confidence)
    if len(certified) == 0:
        return None
    return float(positives[certified[-1]])


def rule_in_start(ppv: float = 0.90, confidence: float = 0.95, tolerated: int = RULE_IN_TOLERATED) -> int:
    """How many studies must lie at or above the first threshold the rule-in tests: the fewest among which
    ``tolerated`` false positives still pass at ``confidence`` (from the targets alone, never the labels)."""
    _target("ppv", ppv)
    _target("confidence", confidence)
    m = tolerated + 1
    while _binom_cdf(tolerated, m, 1 - ppv) > 1 - confidence:
        m += 1
    return m


def rule_in_threshold(probs, labels, ppv: float = 0.90, confidence: float = 0.95) -> float | None:
    """The smallest threshold at or above which studies may be called "likely abnormal" with the guarantee (one of
    the studies' own probabilities); None when the sequence fails at its first test, or there are too few studies
    to begin it."""
    probs, labels = _checked(probs, labels)
    _target("ppv", ppv)
    _target("confidence", confidence)
    order = np.argsort(-probs, kind="stable")
    ranked, false = probs[order], np.cumsum(labels[order] == 0)
    counts = np.arange(1, len(ranked) + 1)  # studies at or above each ranked probability
    # A threshold keeps every study of its probability: only the last of a run of ties is a candidate.
    candidate = np.r_[ranked[1:] != ranked[:-1], True] & (counts >= rule_in_start(ppv, confidence))
    p_values = _binom_cdf(false, counts, 1 - ppv)
    tested = np.flatnonzero(candidate)
    failed = tested[p_values[tested] > 1 - confidence]
    passed = tested[tested < failed[0]] if len(failed) else tested  # the fixed sequence stops at its first failure
    return float(ranked[passed[-1]]) if len(passed) else None


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


SITE_WIDE = "site-wide"


@dataclass(frozen=True)
class OperatingPoints:
    """A checkpoint's fitted operating points (config.json ``operating_points``): per body part, and site-wide (fitted
    on every part's studies together). A part uses its own rule-out (rule-in) where it has one and the site-wide one
    where it has not; with neither, its studies are "uncertain"."""

    parts: dict[str, dict]
    site: dict | None = None

    @classmethod
    def from_config(cls, config: dict | None) -> OperatingPoints | None:
        """From config.json's ``operating_points`` (None, as for checkpoints exported before they existed: None)."""
        if not config:
            return None
        parts = {part: dict(fitted) for part, fitted in config.get("parts", {}).items()}
        return cls(parts, dict(config["site"]) if config.get("site") else None)

    def _point(self, part: str, threshold: str) -> tuple[dict, str]:
        """(the fitted entry whose ``threshold`` a study of ``part`` uses, and whose it is: the part or site-wide)."""
        own = self.parts.get(part, {})
        if own.get(threshold) is None and self.site is not None and self.site.get(threshold) is not None:
            return self.site, SITE_WIDE
        return own, part

    def triage(self, part: str, prob: float) -> str:
        return triage(prob, self._point(part, "rule_out")[0].get("rule_out"), self._point(part, "rule_in")[0].get("rule_in"))

    def basis(self, part: str, group: str | None) -> str | None:
        """Whose guarantee stands behind ``group`` for a study of ``part``: the part's name, ``site-wide``, or None
        ("uncertain" promises nothing)."""
        if group == "likely normal":
            return self._point(part, "rule_out")[1]
        if group == "likely abnormal":
            return self._point(part, "rule_in")[1]
        return None

    def meaning(self, part: str, group: str) -> str:
        """What the group promises for this part, in one sentence a reader can check against the checkpoint."""
        threshold = {"likely normal": "rule_out", "likely abnormal": "rule_in"}.get(group)
        if threshold is None:
            return self.parts.get(part, {}).get("why") or f"between the {part} rule-out and rule-in thresholds"
        fitted, whose = self._point(part, threshold)
        scope = (f"over the site's studies of every part together ({fitted['n_studies']} calibration studies): a "
                 f"guarantee for studies with the site's case mix, not for {part} studies alone"
                 if whose == SITE_WIDE else f"on {fitted['n_studies']} calibration studies")  # fmt: skip
        if group == "likely normal":
            return (f"below the {whose} rule-out threshold {fitted['rule_out']:.3f}, which kept a sensitivity of at "
                    f"least {fitted['sensitivity']:.0%} with {fitted['confidence']:.0%} confidence {scope}")  # fmt: skip
        return (f"at or above the {whose} rule-in threshold {fitted['rule_in']:.3f}, which kept a positive predictive "
                f"value of at least {fitted['ppv']:.0%} with {fitted['confidence']:.0%} confidence {scope}")  # fmt: skip


def rule_out_needs(sensitivity: float = 0.98, confidence: float = 0.95) -> int:
    """The fewest abnormal calibration studies any rule-out needs: sensitivity^n <= 1 - confidence (149 at 0.98 and
    0.95)."""
    _target("sensitivity", sensitivity)
    _target("confidence", confidence)
    return int(np.ceil(np.log(1 - confidence) / np.log(sensitivity) - 1e-9))


def still_needed(n_abnormal: int, sensitivity: float = 0.98, confidence: float = 0.95) -> int:
    """How many more labelled abnormal studies a group needs before a rule-out can carry the guarantee (0: enough)."""
    return max(0, rule_out_needs(sensitivity, confidence) - int(n_abnormal))


def fit_operating_points(parts, probs, labels, sensitivity: float = 0.98, ppv: float = 0.90,
                         confidence: float = 0.95) -> dict:  # fmt: skip
    """Per body part: ``rule_out`` and ``rule_in`` (None where the part's studies cannot carry the guarantee, with
    ``why``), the targets, the confidence and the counts they were fitted on."""
    parts, probs, labels = np.asarray(parts), np.asarray(probs, dtype=float), np.asarray(labels, dtype=int)
    return {part: _fit(probs[parts == part], labels[parts == part], sensitivity, ppv, confidence)
            for part in sorted(set(parts.tolist()))}  # fmt: skip


def fit_site_wide(probs, labels, sensitivity: float = 0.98, ppv: float = 0.90, confidence: float = 0.95) -> dict:
    """The same over every part's studies together: its guarantee is marginal (over studies with the calibration
    set's case mix) and promises nothing about any one part."""
    fitted = _fit(np.asarray(probs, dtype=float), np.asarray(labels, dtype=int), sensitivity, ppv, confidence)
    return {**fitted, "scope": "marginal over the calibration studies' mix of body parts"}


def _fit(p: np.ndarray, y: np.ndarray, sensitivity: float, ppv: float, confidence: float) -> dict:
    rule_out, rule_in = rule_out_threshold(p, y, sensitivity, confidence), rule_in_threshold(p, y, ppv, confidence)
    why = []
    if rule_out is None:
        why.append(f"no rule-out: {int(y.sum())} abnormal studies cannot carry sensitivity {sensitivity} at "
                   f"confidence {confidence} ({still_needed(int(y.sum()), sensitivity, confidence)} more needed)")  # fmt: skip
    if rule_in is None:
        why.append(f"no rule-in: no threshold carries PPV {ppv} at confidence {confidence} (the sequence needs "
                   f"{rule_in_start(ppv, confidence)} studies above its first threshold)")  # fmt: skip
    return {"rule_out": rule_out, "rule_in": rule_in, "sensitivity": sensitivity, "ppv": ppv, "confidence": confidence,
            "n_studies": int(len(p)), "n_abnormal": int(y.sum()), "why": "; ".join(why)}  # fmt: skip
