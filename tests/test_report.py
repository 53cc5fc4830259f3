"""The evaluation report: intervals in metrics.json, a self-contained HTML that a real browser renders whole,
markdown with its PNGs, and calibration that really lowers the calibration error."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mura_mt.evaluation.metrics import METRICS
from mura_mt.evaluation.report import expected_calibration_error
from mura_mt.labels import BODY_PARTS
from mura_mt.training.release import fit_calibration
from scripts import evaluate
from tests.browser import chromium


@pytest.fixture(scope="module")
def report_dir(trained_run, synthetic_root, tmp_path_factory):
    """The report of a copy of the smoke checkpoint whose operating points are set by hand (its val is too small to
    fit any) at the 35th and 80th percentiles of its study probabilities, so every triage group has studies."""
    out = tmp_path_factory.mktemp("report")
    probe = out.parent / f"{out.name}_probe"
    evaluate.main(["--checkpoint", str(trained_run / "best"), "--data-root", str(synthetic_root), "--out", str(probe)])
    probs = pd.read_csv(probe / "study_predictions.csv")["prob"]
    checkpoint = out.parent / f"{out.name}_checkpoint"
    shutil.copytree(trained_run / "best", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    fitted = {"rule_out": float(probs.quantile(0.35)), "rule_in": float(probs.quantile(0.8)), "sensitivity": 0.98,
              "ppv": 0.9, "confidence": 0.95, "n_studies": 300, "n_abnormal": 150, "why": ""}  # fmt: skip
    config["operating_points"]["parts"] = {part: fitted for part in BODY_PARTS}
    (checkpoint / "config.json").write_text(json.dumps(config))
    evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data-root",
            str(synthetic_root),
            "--out",
            str(out),
            "--report",
            "--resamples",
            "1000",
        ]
    )
    return out


def test_metrics_json_carries_an_interval_beside_each_metric(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["bootstrap"]["resamples"] == 1000 and metrics["bootstrap"]["unit"] == "study"
    for gate in ("predicted_gate", "true_gate"):
        for part, block in metrics[gate].items():
            for metric in METRICS:
                assert f"{metric}_ci95" in block, (gate, part, metric)
                interval = block[f"{metric}_ci95"]
                if interval is not None and block[metric] is not None:
                    assert interval[0] <= block[metric] <= interval[1]
    assert metrics["predicted_gate"]["overall"]["study_auroc_ci95"] is not None


def test_markdown_report_links_its_pngs(report_dir):
    text = (report_dir / "report.md").read_text()
    links = re.findall(r"\]\((report_files/[^)]+\.png)\)", text)
    assert {"report_files/confusion.png", "report_files/roc.png", "report_files/reliability.png",
            "report_files/operating_curves.png"} <= set(links)  # fmt: skip
    assert any("gallery-" in link for link in links)
    for link in links:
        assert (report_dir / link).stat().st_size > 1000, link
    assert "paper kappa (test)" in text and "| overall |" in text


def test_html_report_is_self_contained_and_renders_in_a_browser(report_dir):
    page_source = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", page_source)  # nothing fetched from outside
    assert "<script" not in page_source and "<link" not in page_source
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((report_dir / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) >= 4 and all(complete and width > 0 for complete, width in images)
        tables = page.locator("table")
        assert tables.count() == 4  # two gates, calibration, triage
        first = tables.nth(0).inner_text()
        assert "overall" in first and "kappa" in first and re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", first)
        page.close()


def test_the_triage_rows_count_what_the_operating_points_set_aside_with_exact_intervals(report_dir):
    studies = pd.read_csv(report_dir / "study_predictions.csv")
    config = json.loads((report_dir.parent / f"{report_dir.name}_checkpoint/config.json").read_text())
    fitted = config["operating_points"]["parts"]["wrist"]  # the same for every part
    likely_abnormal = studies["prob"] >= fitted["rule_in"]
    likely_normal = (studies["prob"] < fitted["rule_out"]) & ~likely_abnormal
    positives = int(studies["label"].sum())
    kept = positives - int((likely_normal & (studies["label"] == 1)).sum())
    interval = stats.binomtest(kept, positives).proportion_ci(method="exact")
    row = next(line for line in (report_dir / "report.md").read_text().splitlines()
               if line.startswith("| overall |") and "%)" in line)  # fmt: skip
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == str(len(studies)) and cells[2].startswith(f"{int(likely_normal.sum())} (")
    assert cells[3] == f"{kept / positives:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
    assert cells[5] == str(int(likely_abnormal.sum()))
    assert int(likely_normal.sum()) > 0 and int(likely_abnormal.sum()) > 0  # the groups are not empty here


def test_calibration_lowers_ece_of_an_over_confident_model():
    """Logits 4x too large (an over-confident head): Platt scaling fitted on val lowers ECE on held-out studies."""
    rng = np.random.default_rng(0)

    def sample(n):
        true_logit = rng.normal(0, 1.5, n)
        labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
        parts = rng.integers(0, 7, n)
        logits = np.zeros((n, 7))
        logits[np.arange(n), parts] = 4.0 * true_logit
        return parts, labels, logits

    parts, labels, logits = sample(3000)
    calibration = fit_calibration(np.arange(3000).astype(str), parts, labels, logits)
    parts, labels, logits = sample(3000)
    raw = 1 / (1 + np.exp(-logits[np.arange(3000), parts]))
    calibrated = calibration.probs(logits)[np.arange(3000), parts]
    before, after = expected_calibration_error(raw, labels), expected_calibration_error(calibrated, labels)
    assert after < 0.5 * before and after < 0.05


def test_expected_calibration_error_by_hand():
    # Two bins: [0.1, 0.1] with labels [0, 1] (confidence 0.1, accuracy 0.5) and [0.9] with label 1.
    assert expected_calibration_error(np.array([0.1, 0.1, 0.9]), np.array([0, 1, 1])) == pytest.approx(
        2 / 3 * 0.4 + 1 / 3 * 0.1
    )
