"""Operating points with a guarantee, measured: over many calibration draws from a known population, the share of
draws whose rule-out misses the sensitivity target (or whose rule-in misses the PPV target) stays at or under
1 - confidence, and the rule-out sets aside nearly as many normal studies as the true threshold would."""

import numpy as np
import pytest
from scipy import optimize, stats

import mura_mt
from mura_mt.inference.operating_points import (
    fit_site_wide,
    rule_in_start,
    rule_in_threshold,
    rule_out_threshold,
    triage,
    with_warnings,
)

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


def _grid_rule_in(probs, labels, target=0.90, confidence=0.95):
    """The procedure the fixed sequence replaced, measured beside it: a 10-point grid, Bonferroni-corrected."""
    grid = np.round(np.arange(0.50, 1.00, 0.05), 2)
    passing = [t for t in grid if (probs >= t).any() and stats.binom.cdf(
        int((labels[probs >= t] == 0).sum()), int((probs >= t).sum()), 1 - target) <= (1 - confidence) / len(grid)]
    return min(passing) if passing else None


def test_the_rule_in_guarantee_holds_and_a_threshold_is_found_when_it_exists():
    """400 calibration sets of 400 studies: the rule-in is found in at least 95 % of them, misses PPV 0.90 in at
    most 5 % (with binomial slack), and keeps at least 0.8 of the abnormal studies the true threshold keeps."""
    true = optimize.brentq(lambda t: ppv(t) - 0.90, 0.3, 0.99)  # the population's own PPV-0.90 threshold
    rng = np.random.default_rng(1)
    draws = 400
    found = {"fixed sequence": [], "Bonferroni grid": []}
    misses = dict.fromkeys(found, 0)
    for _ in range(draws):
        probs, labels = draw(rng, 400)
        for name, fit in (("fixed sequence", rule_in_threshold), ("Bonferroni grid", _grid_rule_in)):
            t = fit(probs, labels)
            if t is not None:
                found[name].append(ABNORMAL.sf(t) / ABNORMAL.sf(true))  # abnormal studies kept, against the truth
                misses[name] += ppv(t) < 0.90
    for name, kept in found.items():
        print(f"rule-in, {name}: found in {len(kept) / draws:.3f} of {draws} sets, PPV target missed in "
              f"{misses[name] / draws:.3f}, abnormal studies kept: median {np.median(kept):.2f} of the true threshold's")
    kept = found["fixed sequence"]
    assert len(kept) >= 0.95 * draws
    assert misses["fixed sequence"] / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)
    assert np.median(kept) >= 0.8
    assert rule_in_start(0.90, 0.95) == 46  # one false positive among 46 still passes; among 45 it does not


def test_too_few_abnormal_studies_give_no_rule_out_and_bad_input_is_named():
    rng = np.random.default_rng(2)
    probs, labels = draw(rng, 200)  # about 80 abnormal: fewer than the 149 that 0.98 at 0.95 needs
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


def test_a_warned_answer_is_never_likely_normal():
    assert with_warnings("likely normal", ["Body part uncertain (wrist 41%)"]) == "uncertain"
    assert with_warnings("likely normal", []) == "likely normal"
    assert with_warnings("likely abnormal", ["looks unlike the training images"]) == "likely abnormal"
    assert with_warnings(None, ["anything"]) is None


def test_every_answer_carries_the_triage_of_its_own_part_and_probability_and_the_verdict_says_what_it_promises(
    synthetic_root,
):
    import dataclasses

    from mura_mt.inference.operating_points import OperatingPoints
    from mura_mt.inference.predictor import Predictor
    from mura_mt.labels import BODY_PARTS
    from mura_mt.web.upload_tab import verdict_markdown
    from tests.conftest import REPO

    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    images = sorted((synthetic_root / "MURA-v1.1/valid").rglob("*.png"))[:6]
    plain = predictor.predict_study(images)
    assert plain.triage is None and all(v.triage is None for v in plain.views)  # the demo has no operating points
    probs = sorted(v.abnormal_prob for v in plain.views)
    fitted = {"rule_out": probs[1], "rule_in": probs[-1], "sensitivity": 0.98, "ppv": 0.9, "confidence": 0.95,
              "n_studies": 300}  # fmt: skip
    points = OperatingPoints({part: fitted for part in BODY_PARTS if part != "hand"})
    predictor.serving = dataclasses.replace(predictor.serving, operating_points=points)
    study = predictor.predict_study(images)
    for answer in (study, *study.views):
        expected = "uncertain" if answer.body_part == "hand" else points.triage(answer.body_part, answer.abnormal_prob)
        if answer.warnings and expected == "likely normal":
            expected = "uncertain"  # a warned answer is never set aside
        assert answer.triage == expected
    assert {v.triage for v in study.views if v.body_part != "hand"} >= {"likely normal", "likely abnormal"} or all(
        v.body_part == "hand" for v in study.views
    )
    assert study.to_dict()["triage"] == study.triage
    text = verdict_markdown(study, points)
    assert f"Triage: **{study.triage}**" in text
    if study.triage == "likely normal":
        assert f"{probs[1]:.3f}" in text and "98%" in text


MIXTURE = {  # part: (share of the site's studies, prevalence, the model's abnormal and normal score distributions)
    "wrist": (0.35, 0.40, stats.beta(6, 2), stats.beta(2, 6)),
    "hand": (0.25, 0.30, stats.beta(5, 2), stats.beta(2, 5)),
    "finger": (0.15, 0.35, stats.beta(4, 2), stats.beta(2, 4)),
    "shoulder": (0.15, 0.50, stats.beta(3, 2), stats.beta(2, 3)),
    "humerus": (0.10, 0.45, stats.beta(3, 2.5), stats.beta(2, 4)),
}


def _mixture(rng, n):
    names = list(MIXTURE)
    parts = rng.choice(len(names), size=n, p=[MIXTURE[p][0] for p in names])
    labels, probs = np.zeros(n, int), np.zeros(n)
    for k, name in enumerate(names):
        inside = parts == k
        _, prevalence, abnormal, normal = MIXTURE[name]
        labels[inside] = rng.random(inside.sum()) < prevalence
        drawn_abnormal = abnormal.rvs(inside.sum(), random_state=rng)
        drawn_normal = normal.rvs(inside.sum(), random_state=rng)
        probs[inside] = np.where(labels[inside] == 1, drawn_abnormal, drawn_normal)
    return probs, labels


def test_the_site_wide_rule_out_keeps_its_marginal_guarantee_over_mixtures_of_parts():
    """400 calibration sets of 500 studies from five parts with different scores and prevalences, mixed in the
    site's proportions: the site-wide rule-out misses the marginal sensitivity 0.98 in at most 5 % of the sets;
    per part it promises nothing (the weakest part's sensitivity is printed, not asserted)."""
    weights = {p: share * prevalence for p, (share, prevalence, _, _) in MIXTURE.items()}
    total = sum(weights.values())

    def marginal_sensitivity(t):
        return sum(weights[p] / total * MIXTURE[p][2].sf(t) for p in MIXTURE)

    rng = np.random.default_rng(7)
    draws, misses, none, weakest = 400, 0, 0, []
    for _ in range(draws):
        fitted = fit_site_wide(*_mixture(rng, 500))
        if fitted["rule_out"] is None:
            none += 1
            continue
        misses += marginal_sensitivity(fitted["rule_out"]) < 0.98
        weakest.append(min(MIXTURE[p][2].sf(fitted["rule_out"]) for p in MIXTURE))
    print(f"site-wide rule-out: target missed in {misses / draws:.3f} of {draws} sets (allowed 0.05), no threshold in "
          f"{none / draws:.3f}; the weakest part's sensitivity above it: median {np.median(weakest):.3f}")
    assert misses / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)
    assert none / draws <= 0.05  # about 190 abnormal studies a set: enough for a rule-out (149)
