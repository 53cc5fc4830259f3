"""The paired comparison: DeLong, McNemar and the paired bootstrap against independent references, its error rate
on runs that differ only by noise, its refusals, and compare.py end to end on two real evaluations."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from mura_mt.evaluation.compare import (
    ComparisonError,
    Evaluation,
    compare,
    compare_group,
    delong,
    mcnemar_exact,
    pair,
    plain_reading,
)


def _reference_delong(labels, a, b):
    """DeLong et al. 1988 as written: structural components from the pairwise kernel, scipy's normal tail."""
    pos, neg = labels == 1, labels == 0

    def components(scores):
        x, y = scores[pos][:, None], scores[neg][None, :]
        kernel = (x > y) + 0.5 * (x == y)
        return kernel.mean(axis=1), kernel.mean(axis=0), kernel.mean()

    (v10a, v01a, auc_a), (v10b, v01b, auc_b) = components(a), components(b)
    s10, s01 = np.cov(np.stack([v10a, v10b])), np.cov(np.stack([v01a, v01b]))
    covariance = s10 / pos.sum() + s01 / neg.sum()
    z = (auc_b - auc_a) / np.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    return auc_a, auc_b, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("seed", range(5))
def test_delong_equals_the_textbook_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 120)
    a = np.round(labels * 0.8 + rng.normal(0, 0.6, 120), 1)  # rounded: ties within and across classes
    b = np.round(labels * 1.1 + rng.normal(0, 0.6, 120), 1)
    ours, reference = delong(labels, a, b), _reference_delong(labels, a, b)
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert ours[0] == pytest.approx(stats.mannwhitneyu(a[labels == 1], a[labels == 0]).statistic / (
        (labels == 1).sum() * (labels == 0).sum()))  # fmt: skip


def test_mcnemar_equals_scipys_exact_binomial_test():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(5, 200))
        correct_a, correct_b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        only_a, only_b, p = mcnemar_exact(correct_a, correct_b)
        assert (only_a, only_b) == ((correct_a & ~correct_b).sum(), (~correct_a & correct_b).sum())
        expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert p == pytest.approx(expected, rel=1e-12)


def _paired(rng, n=150, noise_a=1.0, noise_b=1.0) -> pd.DataFrame:
    labels = rng.integers(0, 2, n)
    signal = 2.0 * labels - 1.0
    prob_a = 1 / (1 + np.exp(-(1.5 * signal + rng.normal(0, noise_a * 1.5, n))))
    prob_b = 1 / (1 + np.exp(-(1.5 * signal + rng.normal(0, noise_b * 1.5, n))))
    return pd.DataFrame(
        {"label": labels, "prob_a": prob_a, "pred_a": (prob_a > 0.5).astype(int), "prob_b": prob_b,
         "pred_b": (prob_b > 0.5).astype(int)}
    )  # fmt: skip


def test_bootstrap_interval_equals_an_independent_resampling_loop():
    rng = np.random.default_rng(3)
    studies = _paired(rng, n=80, noise_b=0.7)
    ours = compare_group(studies, 400, np.random.default_rng(11))
    # The same draws (resample_counts draws integers once, [R, S]), scored one by one with scikit-learn.
    draws = np.random.default_rng(11).integers(0, len(studies), size=(400, len(studies)))
    y, a, b = (studies[c].to_numpy() for c in ("label", "pred_a", "pred_b"))
    diffs = [cohen_kappa_score(y[d], b[d]) - cohen_kappa_score(y[d], a[d]) for d in draws]
    assert ours["study_kappa"]["ci95"] == pytest.approx(np.percentile(diffs, [2.5, 97.5]), abs=1e-9)
    assert ours["study_kappa"]["diff"] == pytest.approx(cohen_kappa_score(y, b) - cohen_kappa_score(y, a))


def test_runs_that_differ_only_by_noise_are_called_different_no_more_often_than_the_level():
    level, trials = 0.05, 300
    rejected = {"study_kappa": 0, "study_auroc": 0, "delong": 0, "mcnemar": 0}
    for seed in range(trials):
        result = compare_group(_paired(np.random.default_rng(seed)), 300, np.random.default_rng(seed + 10_000))
        rejected["study_kappa"] += result["study_kappa"]["p"] < level
        rejected["study_auroc"] += result["study_auroc"]["p"] < level
        rejected["delong"] += result["delong_p"] < level
        rejected["mcnemar"] += result["mcnemar_p"] < level
    # At most the level plus 2.5 binomial standard errors (0.05 + 0.032 with 300 trials).
    allowed = level + 2.5 * np.sqrt(level * (1 - level) / trials)
    assert {k: v / trials for k, v in rejected.items()} == {k: pytest.approx(0, abs=allowed) for k in rejected}
    # And the tests do see a real difference: B with half the noise is called better most of the time.
    power = sum(
        compare_group(_paired(np.random.default_rng(s), noise_b=0.4), 300, np.random.default_rng(s))["delong_p"] < level
        for s in range(40)
    )
    assert power >= 30


def _evaluation(folder, studies: pd.DataFrame) -> Evaluation:
    return Evaluation(folder, studies, {})


def test_different_studies_or_labels_are_refused_with_the_offenders_named(tmp_path):
    base = pd.DataFrame(
        {"study_id": ["s1", "s2", "s3"], "body_part": ["wrist"] * 3, "label": [0, 1, 1], "prob": [0.1, 0.9, 0.7],
         "pred": [0, 1, 1]}
    )  # fmt: skip
    a = _evaluation(tmp_path / "a", base)
    with pytest.raises(ComparisonError, match=r"only in .*a.*'s3'"):
        pair(a, _evaluation(tmp_path / "b", base.iloc[:2]))
    relabelled = base.assign(label=[0, 1, 0])
    with pytest.raises(ComparisonError, match=r"different label \(first: \['s3'\]\)"):
        pair(a, _evaluation(tmp_path / "b", relabelled))
    assert len(pair(a, _evaluation(tmp_path / "b", base.iloc[::-1]))) == 3  # order does not matter


def test_plain_reading_names_only_what_the_data_tell():
    rng = np.random.default_rng(0)
    studies = _paired(rng, n=400, noise_b=0.3).assign(study_id=[f"s{i}" for i in range(400)])
    studies["body_part"] = np.where(np.arange(400) < 200, "wrist", "hand")
    a = studies.rename(columns={"prob_a": "prob", "pred_a": "pred"})[["study_id", "body_part", "label", "prob", "pred"]]
    b = studies.rename(columns={"prob_b": "prob", "pred_b": "pred"})[["study_id", "body_part", "label", "prob", "pred"]]
    better = compare(_evaluation("a", a), _evaluation("b", b), resamples=500)
    assert plain_reading(better).startswith("B is better on overall: kappa +")
    same = compare(_evaluation("a", a), _evaluation("b", a), resamples=500)
    assert plain_reading(same) == "No difference in kappa can be told, overall or on any body part."
    assert same["overall"]["study_kappa"]["diff"] == 0 and same["overall"]["mcnemar_p"] == 1.0


def test_compare_script_on_two_real_evaluations(trained_run, synthetic_root, tmp_path, capsys):
    from scripts import compare as compare_script
    from scripts import evaluate

    for name, runtime in (("torch", "torch"), ("onnx", "onnx")):
        evaluate.main(
            ["--checkpoint", str(trained_run / "best"), "--data-root", str(synthetic_root), "--out",
             str(tmp_path / name), "--runtime", runtime, "--precision", "fp32"]
        )  # fmt: skip
    capsys.readouterr()
    result = compare_script.main([str(tmp_path / "torch"), str(tmp_path / "onnx"), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    sources = [json.loads((tmp_path / n / "metrics.json").read_text())["source"] for n in ("torch", "onnx")]
    assert sources[0]["split_sha256"] == sources[1]["split_sha256"] and len(sources[0]["weights_sha256"]) == 64
    assert sources[0]["runtime"] == "torch" and sources[1]["runtime"] == "onnx"
    assert re.search(r"runtime\s+torch \| onnx", printed) and sources[0]["weights_sha256"] in printed
    saved = json.loads((tmp_path / "cmp/compare.json").read_text())
    for group in ("overall", "wrist"):
        for metric in ("study_kappa", "study_auroc", "sensitivity", "specificity"):
            assert set(saved[group][metric]) == {"a", "b", "diff", "ci95", "p"}
        assert {"delong_p", "mcnemar_p", "studies"} <= set(saved[group])
    assert saved["overall"]["studies"] == result["overall"]["studies"] == 21  # 3 valid studies x 7 parts
    page = (tmp_path / "cmp/compare.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")
    assert "![forest plot](compare_files/forest.png)" in (tmp_path / "cmp/compare.md").read_text()
    assert (tmp_path / "cmp/compare_files/forest.png").stat().st_size > 1000
    # Not the same split: refused, naming what differs.
    frame = pd.read_csv(tmp_path / "onnx/study_predictions.csv")
    frame.iloc[1:].to_csv(tmp_path / "onnx/study_predictions.csv", index=False)
    with pytest.raises(SystemExit) as stopped:
        compare_script.main([str(tmp_path / "torch"), str(tmp_path / "onnx"), "--out", str(tmp_path / "x")])
    assert stopped.value.code == 2 and "only in" in capsys.readouterr().err
