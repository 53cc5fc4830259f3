"""A year at a busy site costs the same on day 365 as on day 1: the site's figures come from a few columns, their
bootstrap is drawn as counts for large groups (the same distribution for the count metrics), and every page and API
call shares one computation per window. Times are the benchmark's (scripts/benchmark.py --only site); these tests
hold what must stay true: the figures are scikit-learn's, the intervals the study bootstrap's, the work done once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_mt.bench.site_fill import fill_year
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.evaluation.bootstrap import counted_intervals, group_intervals
from mura_mt.site.labels import SiteLabels
from mura_mt.site.performance import SharedEvidence


def test_counted_intervals_are_the_study_bootstraps():
    rng = np.random.default_rng(3)
    labels = rng.random(1500) < 0.35
    probs = np.where(labels, rng.beta(5, 2, 1500), rng.beta(2, 5, 1500))
    studies = pd.DataFrame({"label": labels.astype(int), "prob": probs, "pred": (probs >= 0.5).astype(int)})
    exact = group_intervals(None, studies, 2000, np.random.default_rng(1))
    counted = counted_intervals(studies, 2000, np.random.default_rng(2))
    for metric in ("study_kappa", "study_auroc", "sensitivity", "specificity", "accuracy"):
        assert counted[metric] == pytest.approx(exact[metric], abs=0.01), metric  # Monte Carlo error of 2,000 draws
    assert counted["image_auroc"] is None


@pytest.fixture(scope="module")
def year(tmp_path_factory):
    store = WorklistStore(tmp_path_factory.mktemp("year") / "worklist.sqlite", node="NODE")
    fill_year(store, 20_000, time.time())
    return store


def test_the_years_figures_are_scikit_learns_and_the_lean_read_equals_the_detailed_one(year):
    labels = SiteLabels(year)
    lean, _ = labels.evidence(resamples=200, detail=False)
    detailed, studies = labels.evidence(resamples=200, detail=True)
    truth, prob, pred = studies["label"], studies["prob"], studies["pred"]
    assert lean["overall"]["n_studies"] == len(studies) > 5000
    assert lean["overall"]["study_kappa"] == pytest.approx(cohen_kappa_score(truth, pred))
    assert lean["overall"]["study_auroc"] == pytest.approx(roc_auc_score(truth, prob))
    assert lean["overall"]["sensitivity"] == pytest.approx(((pred == 1) & (truth == 1)).sum() / (truth == 1).sum())
    for part in ("overall", "wrist", "humerus"):
        for metric in ("study_kappa", "study_auroc", "sensitivity", "specificity", "n_studies", "n_positive"):
            assert lean[part][metric] == pytest.approx(detailed[part][metric]), (part, metric)
    assert lean["coverage"] == detailed["coverage"] and lean["bootstrap"]["drawn_as_counts_above"] == 1000


def test_every_page_shares_one_computation_per_window_and_period(year):
    shared = SharedEvidence(year, resamples=200, period_s=600.0)
    results: list = []
    readers = [threading.Thread(target=lambda: results.append(shared.figures(days=None, picture=True)))
               for _ in range(8)]  # fmt: skip
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert shared.computations == 1 and len({id(r) for r in results}) == 1  # eight pages, one computation
    assert results[0].picture.startswith("<img")
    before = results[0].metrics["coverage"]["labelled"]
    unlabelled = year._rows("SELECT s.study_uid FROM studies s LEFT JOIN labels l ON l.study_uid = s.study_uid "
                            "WHERE l.id IS NULL LIMIT 1")[0]["study_uid"]  # fmt: skip
    SiteLabels(year).record("abnormal", "reader", "ana", study_uid=unlabelled)
    assert shared.figures(days=None, picture=True) is results[0]  # changed, but within the period: the same figures
    shared.period_s = 0.0  # the period is over: the reader still gets the last figures at once, and they are redone
    assert shared.figures(days=None, picture=True) is results[0]
    shared.wait()
    again = shared.figures(days=None, picture=True)
    assert shared.computations == 2 and again.metrics["coverage"]["labelled"] == before + 1
    assert shared.figures(days=None, picture=True) is again  # nothing changed since: no new computation, any period
    shared.figures(days=30, source="reader")
    assert shared.computations == 3  # another window is another computation


def test_the_performance_tab_says_how_long_until_each_part_has_its_own_point(year):
    from mura_mt.web.performance_tab import _points_line

    metrics, _ = SiteLabels(year).evidence(resamples=50, detail=False)
    line = _points_line(metrics)
    assert "needs 149 labelled abnormal studies" in line and "site-wide enough" in line
    for part in ("wrist", "humerus"):
        more = max(0, 149 - metrics[part]["n_positive"])
        assert (f"{part} {more} more" if more else f"{part} enough") in line


def test_the_windows_an_app_opens_with_are_prepared_before_anyone_asks(year):
    from mura_mt.site.performance import Window

    shared = SharedEvidence(year, resamples=100, period_s=600.0)
    shared.prepare(Window(), Window(days=30, picture=True))
    assert shared.computations == 2
    prepared = shared.figures()
    assert shared.figures(days=30, picture=True).picture.startswith("<img") and shared.computations == 2
    assert prepared.metrics["window"] == {"since": None, "until": None, "source": "any"}
