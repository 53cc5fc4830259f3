"""Operating points with a guarantee, measured: over many calibration draws from a known population, the share of
draws whose rule-out misses the sensitivity target (or whose rule-in misses the PPV target) stays at or under
1 - confidence, and the rule-out sets aside nearly as many normal studies as the true threshold would."""

import numpy as np
import pytest
from scipy import stats

import mura_mt
from mura_mt.inference.operating_points import rule_in_threshold, rule_out_threshold, triage

PREVALENCE = 0.4
ABNORMAL, NORMAL = stats.beta(5, 2), stats.beta(2, 5)  # the model's study probabilities, by truth


def draw(rng, n):
    labels = (rng.random(n) < PREVALENCE).astype(int)
    probs = np.where(labels == 1, ABNORMAL.rvs(n, random_state=rng), NORMAL.rvs(n, random_state=rng))
    return probs, labels


def ppv(t):
    tp, fp = PREVALENCE * ABNORMAL.sf(t), (1 - PREVALENCE) * NORMAL.sf(t)
    return tp / (tp + fp)


def test_the_rule_out_guarantee_holds_over_many_calibration_draws_and_is_not_needlessly_low():
    rng = np.random.default_rng(0)
    draws, misses, set_aside = 400, 0, []
    for _ in range(draws):
        t = rule_out_threshold(*draw(rng, 600), sensitivity=0.98, confidence=0.95)
        assert t is not None  # about 240 abnormal studies: enough
        misses += ABNORMAL.sf(t) < 0.98  # the population's sensitivity above t
        set_aside.append(NORMAL.cdf(t))
    oracle = NORMAL.cdf(ABNORMAL.ppf(0.02))  # normals set aside by the true 98 % threshold
    rate, share = misses / draws, float(np.median(set_aside))
    print(f"rule-out: target missed in {rate:.3f} of {draws} draws (allowed 0.05); normals set aside: median "
          f"{share:.3f} against {oracle:.3f} at the true threshold ({share / oracle:.2f})")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)  # the guarantee, up to the sampling of the draws
    assert share >= 0.5 * oracle


def test_the_rule_in_guarantee_holds_over_many_calibration_draws():
    rng = np.random.default_rng(1)
    draws, misses, found = 400, 0, []
    for _ in range(draws):
        t = rule_in_threshold(*draw(rng, 600), ppv=0.90, confidence=0.95)
        if t is not None:
            found.append(t)
            misses += ppv(t) < 0.90
    rate = misses / draws
    oracle = min(t for t in np.round(np.arange(0.5, 1, 0.05), 2) if ppv(t) >= 0.90)
    print(f"rule-in: found in {len(found)} of {draws} draws, target missed in {rate:.3f}; threshold median "
          f"{np.median(found):.2f} against {oracle:.2f}, the lowest grid point whose true PPV is 0.90")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)
    assert len(found) >= 0.9 * draws


def test_too_few_abnormal_studies_give_no_rule_out_and_bad_input_is_named():
    rng = np.random.default_rng(2)
    probs, labels = draw(rng, 200)  # about 80 abnormal: fewer than the 148 that 0.98 at 0.95 needs
    assert rule_out_threshold(probs, labels) is None
    assert rule_out_threshold(probs, labels, sensitivity=0.95) is not None  # 59 suffice at 0.95
    with pytest.raises(ValueError, match="labels must be 0"):
        rule_out_threshold([0.2, 0.4], [0, 2])
    with pytest.raises(ValueError, match="one length"):
        rule_in_threshold([0.2, 0.4], [0])
    with pytest.raises(ValueError, match="sensitivity must be"):
        rule_out_threshold([0.2], [1], sensitivity=1.0)
    assert [triage(p, 0.2, 0.8) for p in (0.1, 0.5, 0.9)] == ["likely normal", "uncertain", "likely abnormal"]
    assert triage(0.1, None, None) == "uncertain"
    assert mura_mt.rule_out_threshold is rule_out_threshold and mura_mt.rule_in_threshold is rule_in_threshold
