"""The site report a radiologist reads: the figures of ``site.site_metrics`` with their intervals, ROC curves and a
reliability diagram, counts per body part, label coverage and agreement, and the studies where model and label
disagree with the node's own Grad-CAM pictures. Tables, figures and page style are ``report``'s.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from mura_mt.evaluation.report import (
    Figure,
    expected_calibration_error,
    html_image,
    html_page,
    html_table,
    markdown_table,
    png_bytes,
    roc_figure,
)
from mura_mt.evaluation.site import MIN_STUDIES, TOO_FEW, disagreements
from mura_mt.labels import BODY_PARTS

COLUMNS = (
    ("study_kappa", "kappa"),
    ("study_auroc", "AUROC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("accuracy", "agreement"),
)
HEADER = ["body part", "studies", "abnormal", *(label for _, label in COLUMNS), "judgement"]
SHOWN_DISAGREEMENTS = 12


def metric_rows(metrics: dict) -> list[list[str]]:
    """One row per body part with studies, then overall: each figure with its interval."""
    rows = []
    for part in (*BODY_PARTS, "overall"):
        block = metrics.get(part)
        if not block:
            continue
        cells = [part, str(block["n_studies"]), str(block["n_positive"])]
        for key, _ in COLUMNS:
            value, interval = block[key], block.get(f"{key}_ci95")
            text = "-" if value is None else f"{value:.3f}"
            cells.append(f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text)
        cells.append(block["judgement"])
        rows.append(cells)
    return rows


def reliability_figure(studies: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfectly calibrated")
    if studies["label"].nunique() == 2:
        observed, predicted = calibration_curve(studies["label"], studies["prob"], n_bins=10, strategy="uniform")
        ece = expected_calibration_error(studies["prob"], studies["label"])
        ax.plot(predicted, observed, "o-", label=f"this site (ECE {ece:.3f})")
    ax.set(xlabel="the node's probability of abnormal (study)", ylabel="observed share abnormal", xlim=(0, 1),
           ylim=(0, 1), title="Reliability at this site")  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    caption = "Reliability of the answers the node gave (calibrated) against the site's labels; 10 equal-width bins."
    return Figure("reliability.png", caption, png_bytes(fig))


def write_site_report(out: Path, metrics: dict, studies: pd.DataFrame, source: str,
                      pictures: dict[str, list[tuple[str, bytes]]]) -> tuple[Path, Path]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    blocks = {part: block for part, block in metrics.items() if part in (*BODY_PARTS, "overall")}
    figures = [roc_figure(studies, blocks), reliability_figure(studies)]
    wrong = disagreements(studies).head(SHOWN_DISAGREEMENTS)
    cards = []
    for row in wrong.itertuples():
        verdict = "abnormal" if row.pred else "normal"
        truth = "abnormal" if row.label else "normal"
        caption = (f"{row.accession or row.study_id} ({row.body_part}): the model said {verdict} (p = {row.prob:.2f}), "
                   f"the {row.label_source} ({row.label_author}) said {truth}")  # fmt: skip
        shown = pictures.get(row.study_id) or []
        figs = [Figure(f"disagree-{row.Index}-{j}.png", f"{caption}; {c}", png) for j, (c, png) in enumerate(shown, 1)]
        cards.append((caption, figs))
    assets = out / "report_files"
    assets.mkdir(parents=True, exist_ok=True)
    for figure in [*figures, *(f for _, figs in cards for f in figs)]:
        (assets / figure.name).write_bytes(figure.png)
    coverage, agreement, boot = metrics["coverage"], metrics["agreement"], metrics["bootstrap"]
    share = f"{coverage['share']:.0%}" if coverage["share"] is not None else "-"
    facts = (
        f"{coverage['labelled']} labelled of {coverage['answered']} answered studies ({share}). The model and the "
        f"label agree on {agreement['agree']} and disagree on {agreement['disagree']}."
    )
    note = (
        f"Brackets: 95% bootstrap interval ({boot['resamples']} resamples of studies, seed {boot['seed']}). A group "
        f"with fewer than {MIN_STUDIES} labelled studies is marked \"{TOO_FEW}\": its interval shows why. "
        "The body part is the label's where the reader corrected it, else the model's."
    )
    counts = [[part, str(metrics[part]["n_studies"]), str(metrics[part]["n_positive"])]
              for part in BODY_PARTS if part in metrics]  # fmt: skip

    sections = [f"<h1>Site report</h1><p>{html.escape(source)}</p><p>{html.escape(facts)}</p>",
                '<p class="note">Research software; not a medical device.</p>',
                "<h2>Performance at this site</h2>", html_table(HEADER, metric_rows(metrics)),
                f'<p class="note">{html.escape(note)}</p>',
                "<h2>Counts per body part</h2>", html_table(["body part", "labelled", "abnormal"], counts)]  # fmt: skip
    for title, figure in (("ROC curves", figures[0]), ("Calibration", figures[1])):
        sections.append(f"<h2>{title}</h2><figure>{html_image(figure)}<figcaption>"
                        f"{html.escape(figure.caption)}</figcaption></figure>")  # fmt: skip
    sections.append(f"<h2>Where the model and the label disagree ({agreement['disagree']})</h2>")
    for caption, figs in cards:
        images = "".join(f"<figure class='card'>{html_image(f)}</figure>" for f in figs)
        images = images or "<p class='note'>The node's pictures of this study are not on this machine.</p>"
        sections.append(f"<h3>{html.escape(caption)}</h3><div class='gallery'>{images}</div>")
    if not cards:
        sections.append("<p>None.</p>")
    html_file, md_file = out / "report.html", out / "report.md"
    html_file.write_text(html_page("mura-mt site report", sections))

    lines = ["# Site report", "", source, "", facts, "", "Research software; not a medical device.", "",
             "## Performance at this site", "", markdown_table(HEADER, metric_rows(metrics)), "", note, "",
             "## Counts per body part", "", markdown_table(["body part", "labelled", "abnormal"], counts)]  # fmt: skip
    for title, figure in (("ROC curves", figures[0]), ("Calibration", figures[1])):
        lines += ["", f"## {title}", "", f"![{figure.caption}]({assets.name}/{figure.name})", "", figure.caption]
    lines += ["", f"## Where the model and the label disagree ({agreement['disagree']})"]
    for caption, figs in cards:
        lines += ["", f"### {caption}", ""] + [f"![{caption}]({assets.name}/{f.name})" for f in figs]
    md_file.write_text("\n".join(lines) + "\n")
    return html_file, md_file


def write_site_outputs(out: Path, metrics: dict, studies: pd.DataFrame, source: str,
                       pictures: dict[str, list[tuple[str, bytes]]] | None = None) -> dict[str, Path]:  # fmt: skip
    """``metrics.json``, ``study_predictions.csv``, ``report.html`` (self-contained) and ``report.md`` (with its
    PNGs in ``report_files/``); ``pictures``: study_id -> [(caption, PNG)] of the disagreements (the node's
    Grad-CAM Secondary Captures)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    studies.to_csv(out / "study_predictions.csv", index=False)
    html_file, md_file = write_site_report(out, metrics, studies, source, pictures or {})
    return {"metrics": out / "metrics.json", "predictions": out / "study_predictions.csv", "html": html_file,
            "markdown": md_file}  # fmt: skip
