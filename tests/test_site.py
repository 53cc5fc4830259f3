"""The site's own evidence: labelled answers in the worklist store, scored by the same metrics and bootstrap as
evaluate.py, give what scikit-learn gives on the same (label, probability) pairs, with intervals and "too few to
judge" where a group is small; site_report.py writes the files and its report renders in a real Chromium."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from tests.browser import chromium
from tests.test_worklist_store import view


def fill_site(store: WorklistStore, n: int = 80, labelled: int = 70, seed: int = 3, start: float = 1000.0) -> pd.DataFrame:
    """``n`` answered studies (wrist mostly, 12 hands), the first ``labelled`` with a label from the three sources;
    the probabilities follow the labels loosely, as a real model's would. Returns the truth."""
    rng = np.random.default_rng(seed)
    labels = SiteLabels(store)
    rows = []
    for i in range(n):
        uid, part = f"1.2.826.0.9.{i}", "hand" if i % 7 == 0 else "wrist"
        label = int(rng.random() < 0.45)
        prob = float(np.clip(rng.normal(0.65 if label else 0.35, 0.2), 0.01, 0.99))
        store.add_instance(view(uid, accession=f"ACC{i}"), now=start + i)
        assert store.claim(uid, start + i, now=start + 1000.0)
        answer = {"body_part": part, "abnormal_prob": prob, "is_abnormal": prob >= 0.5, "warnings": []}
        assert store.record_answer(uid, start + i, answer, [], [])
        if i < labelled:
            source = ("reader", "ris", "import")[i % 3]
            labels.record(label, source, f"{source}-author", study_uid=uid)
        rows.append((uid, part, label, prob, int(prob >= 0.5), i < labelled))
    return pd.DataFrame(rows, columns=["study_id", "body_part", "label", "prob", "pred", "labelled"])


@pytest.fixture
def site_db(tmp_path):
    store = WorklistStore(tmp_path / "worklist.sqlite", node="NODEA")
    truth = fill_site(store)
    return tmp_path / "worklist.sqlite", truth[truth["labelled"]]


def test_site_figures_are_scikit_learns_with_intervals_and_small_groups_say_so(site_db, tmp_path):
    from scripts.site_report import main

    db, truth = site_db
    metrics = main(["--db", str(db), "--out", str(tmp_path / "site"), "--resamples", "300"])
    overall = metrics["overall"]
    assert overall["study_kappa"] == pytest.approx(cohen_kappa_score(truth["label"], truth["pred"]))
    assert overall["study_auroc"] == pytest.approx(roc_auc_score(truth["label"], truth["prob"]))
    positives, negatives = truth[truth["label"] == 1], truth[truth["label"] == 0]
    assert overall["sensitivity"] == pytest.approx((positives["pred"] == 1).mean())
    assert overall["specificity"] == pytest.approx((negatives["pred"] == 0).mean())
    for name in ("study_kappa", "study_auroc", "sensitivity", "specificity"):
        low, high = overall[f"{name}_ci95"]
        assert low <= overall[name] <= high and high - low > 0.02
    assert overall["n_studies"] == 70 and overall["judgement"] == "enough to judge"
    hand = truth[truth["body_part"] == "hand"]
    assert metrics["hand"]["n_studies"] == len(hand) < 20 and metrics["hand"]["judgement"] == "too few to judge"
    assert metrics["coverage"] == {"labelled": 70, "answered": 80, "share": 70 / 80}
    agree = int((truth["label"] == truth["pred"]).sum())
    assert metrics["agreement"]["agree"] == agree and metrics["agreement"]["disagree"] == 70 - agree
    written = json.loads((tmp_path / "site" / "metrics.json").read_text())
    assert written["overall"]["study_kappa"] == overall["study_kappa"]
    assert len(pd.read_csv(tmp_path / "site" / "study_predictions.csv")) == 70
    only_reader = main(["--db", str(db), "--out", str(tmp_path / "reader"), "--source", "reader", "--resamples", "300"])
    assert only_reader["overall"]["n_studies"] == 24  # every third of the 70
    later = main(["--db", str(db), "--out", str(tmp_path / "later"), "--since", "1040", "--resamples", "300"])
    assert later["overall"]["n_studies"] == 30 and later["coverage"]["answered"] == 40


def test_the_site_report_renders_whole_in_a_browser(site_db, tmp_path):
    from scripts.site_report import main

    db, truth = site_db
    main(["--db", str(db), "--out", str(tmp_path / "site"), "--resamples", "200"])
    markdown = (tmp_path / "site" / "report.md").read_text()
    assert "too few to judge" in markdown and "(report_files/roc.png)" in markdown
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((tmp_path / "site" / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 2 and all(complete and width > 0 for complete, width in images)
        text = page.locator("table").first.inner_text()
        assert "overall" in text and "too few to judge" in text
        disagree = int((truth["label"] != truth["pred"]).sum())
        assert page.locator("h3").count() == min(disagree, 12)
        page.close()


def test_a_bad_window_is_refused_with_the_accepted_form(site_db, tmp_path, capsys):
    from scripts.site_report import main

    db, _ = site_db
    with pytest.raises(SystemExit):
        main(["--db", str(db), "--out", str(tmp_path / "x"), "--since", "last tuesday"])
    assert "ISO 8601" in capsys.readouterr().err
