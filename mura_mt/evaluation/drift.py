"""Drift without labels: is the stream of a site's answers still like the validation set the checkpoint was
fitted on? Pure NumPy/SciPy; the node's store feeds it (``site.monitoring.DriftMonitor``).

The reference (``drift_reference.json`` in the checkpoint folder, written at export by running the Predictor over
the validation studies, the serving path) keeps, per body part, the calibrated study probabilities; the share of
studies with the "unlike the training images" warning; and the body-part mix. A window of the site's answers (the
last 500 studies, at most 7 days old) is compared with it:

- per body part with at least 20 studies on both sides: the two-sample Kolmogorov-Smirnov test on the
  probabilities, and the population stability index (PSI) over the reference's deciles;
- the warning rate: a one-sided Fisher exact test, window against reference (a rise alarms, a fall does not);
- the body-part mix: a chi-square test of homogeneity, window against reference.

A test alarms when its p-value is below ``ALPHA`` / (the number of tests run), Bonferroni, so the window as a whole
false-alarms at most ``ALPHA`` of the time; a probability test also needs PSI >= ``PSI_ALARM`` (a shift large enough
to matter, not only to detect). ``tests/test_drift.py`` measures the false alarm rate over repeated windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mura_mt.labels import BODY_PARTS

REFERENCE_FILE = "drift_reference.json"
ALPHA = 0.01
PSI_ALARM = 0.1  # the usual reading: < 0.1 no real change, 0.1-0.25 moderate, > 0.25 major
MIN_PART_STUDIES = 20
MIN_WINDOW_STUDIES = 50
WINDOW_STUDIES = 500
WINDOW_DAYS = 7.0


def build_reference(parts: list[str], probs: list[float], warned: list[bool], source: str) -> dict:
    """The reference of a validation run: each study's decided body part, calibrated probability and whether it
    carried the "unlike the training images" warning."""
    by_part = {part: sorted(round(float(p), 5) for p, q in zip(probs, parts) if q == part) for part in BODY_PARTS}
    return {
        "version": 1,
        "source": source,
        "studies": len(parts),
        "probabilities": {part: values for part, values in by_part.items() if values},
        "part_mix": {part: int(sum(q == part for q in parts)) for part in BODY_PARTS},
        "warning_rate": float(np.mean(warned)) if warned else 0.0,
        "warned": int(np.sum(warned)),
    }


def reference_from_predictor(predictor, table, batch_studies: int = 16, progress: bool = True) -> dict:
    """Run ``predictor`` over the studies of an index table as the node would, and build the reference."""
    from tqdm.auto import tqdm

    from mura_mt.inference.ood import WARNING as UNLIKE_TRAINING

    groups = [views["path"].tolist() for _, views in table.groupby("study_id", sort=True)]
    parts, probs, warned = [], [], []
    for start in tqdm(range(0, len(groups), batch_studies), desc="drift reference", disable=not progress):
        for result in predictor.predict_studies(groups[start : start + batch_studies]):
            parts.append(result.body_part)
            probs.append(float(result.abnormal_prob))
            warned.append(UNLIKE_TRAINING in result.warnings)
    return build_reference(parts, probs, warned, f"{len(groups)} validation studies")


def write_reference(checkpoint_dir: str | Path, reference: dict, name: str = REFERENCE_FILE) -> Path:
    path = Path(checkpoint_dir) / name
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(reference, indent=1))
    temporary.replace(path)  # never half a reference
    return path


def load_reference(checkpoint_dir: str | Path | None, runtime: str | None = None) -> dict | None:
    """The checkpoint's reference, or None (an older checkpoint, or a Hub id not downloaded here): the one made from
    ``runtime``'s own answers where the checkpoint ships one for it (its int8 graph does), else the fp32 one."""
    if checkpoint_dir is None:
        return None
    directory = Path(checkpoint_dir)
    path = directory / REFERENCE_FILE
    if runtime is not None and (directory / "config.json").is_file():
        from mura_mt.inference.runners import runtime_file  # serving's import; the tests here stay NumPy/SciPy

        config = json.loads((directory / "config.json").read_text())
        path = runtime_file(directory, config, runtime, "drift_reference") or path
    return json.loads(path.read_text()) if path.is_file() else None


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI over the reference's quantile bins: sum (cur - ref) * ln(cur / ref), shares floored at 1e-4."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, 1e-4), np.maximum(cur, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def check_drift(reference: dict | None, parts: list[str], probs: list[float], warned: list[bool],
                window: dict | None = None) -> dict:  # fmt: skip
    """Compare a window of answers (their decided parts, probabilities and warnings) with ``reference``.

    Returns ``{"status": "no reference" | "too few studies" | "checked", "detail", "window", "tests": [{name,
    statistic_name, statistic, p_value, threshold, alarm, ...}], "alarm"}``."""
    from scipy import stats  # here, not at the top: the app imports this module at start-up (0.4 s of its cold start)

    window = {**(window or {}), "studies": len(parts)}
    if reference is None:
        return {"status": "no reference", "detail": "no reference: the checkpoint carries no validation reference "
                "(re-export it, or run scripts/drift_reference.py)", "window": window, "tests": [], "alarm": False}  # fmt: skip
    if len(parts) < MIN_WINDOW_STUDIES:
        return {"status": "too few studies", "detail": f"too few studies to judge drift ({len(parts)} in the window, "
                f"{MIN_WINDOW_STUDIES} needed)", "window": window, "tests": [], "alarm": False}  # fmt: skip
    parts_arr, probs_arr = np.asarray(parts), np.asarray(probs, dtype=float)
    tests = []
    for part, values in reference["probabilities"].items():
        current = probs_arr[parts_arr == part]
        if len(values) >= MIN_PART_STUDIES and len(current) >= MIN_PART_STUDIES:
            ref = np.asarray(values, dtype=float)
            result = stats.ks_2samp(ref, current)
            tests.append({"name": f"probabilities {part}", "statistic_name": "KS D", "statistic": float(result.statistic),
                          "p_value": float(result.pvalue), "psi": population_stability_index(ref, current),
                          "n": int(len(current))})  # fmt: skip
    # Both the window and the reference are samples: two-sample tests, so the reference's own sampling error does
    # not read as drift (one-sample tests against the reference's estimates false-alarmed 6% of like windows).
    k, n = int(np.sum(warned)), len(warned)
    ref_n = int(reference["studies"])
    ref_k = int(reference.get("warned", round(reference["warning_rate"] * ref_n)))
    fisher = stats.fisher_exact([[k, n - k], [ref_k, ref_n - ref_k]], alternative="greater")
    tests.append({"name": "unlike-the-training-images rate", "statistic_name": "rate", "statistic": k / n,
                  "reference": reference["warning_rate"], "p_value": float(fisher.pvalue), "n": n})  # fmt: skip
    observed = np.array([np.sum(parts_arr == part) for part in BODY_PARTS], dtype=float)
    expected = np.array([reference["part_mix"].get(part, 0) for part in BODY_PARTS], dtype=float)
    used = (observed + expected) > 0
    chi2 = stats.chi2_contingency(np.vstack([observed[used], expected[used]]), correction=False)
    tests.append({"name": "body-part mix", "statistic_name": "chi-square", "statistic": float(chi2.statistic),
                  "p_value": float(chi2.pvalue), "n": n})  # fmt: skip
    threshold = ALPHA / len(tests)
    for test in tests:
        test["threshold"] = threshold
        test["alarm"] = bool(test["p_value"] < threshold and test.get("psi", PSI_ALARM) >= PSI_ALARM)
    return {"status": "checked", "detail": "", "window": window, "tests": tests,
            "alarm": any(t["alarm"] for t in tests)}  # fmt: skip
