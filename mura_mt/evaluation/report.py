"""The evaluation report a person reads: report.html (self-contained) and report.md with its PNGs.

Owns the presentation of an evaluation: metric tables with bootstrap intervals beside the MURA paper's numbers, the
body-part confusion matrix, ROC curves with the operating point, reliability diagrams and ECE before and after
calibration, the triage groups with their operating curves (``triage_report``), and a gallery of the most confident true
positives, false positives and false negatives with their Grad-CAM overlays. The numbers come from ``metrics``,
``bootstrap`` and the Predictor; nothing here computes a metric of its own except the calibration error. Plots are
matplotlib (Agg).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from mura_mt.inference.calibration import Calibration
from mura_mt.inference.explain import overlay
from mura_mt.labels import BODY_PARTS
from mura_mt.evaluation.figures import Figure, png_bytes
from mura_mt.evaluation.metrics import GATES, gate_predictions
from mura_mt.evaluation.triage_report import HEADER as TRIAGE_HEADER
from mura_mt.evaluation.triage_report import operating_curve_figure, summary_rows, triage_summary, with_triage
from mura_mt.inference.operating_points import SITE_WIDE
from mura_mt.inference.predictor import Predictor

# Rajpurkar et al., MURA (arXiv 1712.06957 v4), Table 2: the model's Cohen's kappa on the hidden TEST set.
# A different split from anything this project evaluates on: context, not a like-for-like comparison.
PAPER_TEST_KAPPA = {
    "elbow": 0.710,
    "finger": 0.389,
    "forearm": 0.737,
    "hand": 0.851,
    "humerus": 0.600,
    "shoulder": 0.729,
    "wrist": 0.931,
    "overall": 0.705,
}
COLUMNS = (
    ("study_kappa", "kappa"),
    ("study_auroc", "study AUROC"),
    ("image_auroc", "image AUROC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("accuracy", "accuracy"),
)
GALLERY = (
    ("tp", "Most confident true positives", "abnormal studies called abnormal, highest probability first"),
    ("fp", "Most confident false positives", "normal studies called abnormal, highest probability first"),
    ("fn", "Most confident false negatives", "abnormal studies called normal, lowest probability first"),
)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins: sum over bins of (share of samples) x |accuracy - confidence|."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(labels[inside].mean() - probs[inside].mean())
    return float(error)


def write_report(
    out: Path,
    name: str,
    metrics: dict,
    table: pd.DataFrame,
    part_probs: np.ndarray,
    anomaly_logits: np.ndarray,
    predictor: Predictor,
    source: str,
    per_gallery: int = 3,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write ``out/NAME.html`` (images embedded) and ``out/NAME.md`` (images in ``out/NAME_files/``)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    calibration = predictor.calibration
    studies = {
        "after": gate_predictions(table, part_probs, anomaly_logits, calibration, "predicted")[1],
        "before": gate_predictions(table, part_probs, anomaly_logits, Calibration(), "predicted")[1],
    }
    steps = tqdm(total=4, desc="report", disable=not progress)
    figures = [_confusion_figure(metrics)]
    steps.update()
    figures.append(roc_figure(studies["after"], metrics["predicted_gate"]))
    steps.update()
    calibration_rows, reliability = _calibration_section(studies)
    figures.append(reliability)
    steps.update()
    gallery = _gallery(studies["after"], table, predictor, per_gallery)
    steps.update()
    steps.close()
    triage = _triage_section(studies["after"], predictor)
    if triage["figure"] is not None:
        figures.append(triage["figure"])

    assets = out / f"{name}_files"
    assets.mkdir(parents=True, exist_ok=True)
    for figure in [*figures, *(f for _, _, _, items in gallery for f in items)]:
        (assets / figure.name).write_bytes(figure.png)
    context = dict(metrics=metrics, source=source, figures=figures, calibration_rows=calibration_rows, gallery=gallery,
                   triage=triage)  # fmt: skip
    html_file, md_file = out / f"{name}.html", out / f"{name}.md"
    html_file.write_text(_html(**context))
    md_file.write_text(_markdown(assets.name, **context))
    return html_file, md_file


def _triage_section(studies: pd.DataFrame, predictor: Predictor) -> dict:
    """The triage groups' table and operating curves, or why there are none."""
    points = predictor.serving.operating_points
    if points is None:
        note = ("This checkpoint has no operating points, so no study is triaged (export it with this version, or "
                "fit the site's own with scripts/calibrate_site.py).")  # fmt: skip
        return {"note": note, "header": TRIAGE_HEADER, "rows": [], "figure": None}
    triaged = with_triage(studies, points)
    summary = triage_summary(triaged)
    note = (
        '"Likely normal": below the predicted part\'s rule-out threshold; the sensitivity is that of every other '
        'study, the share of abnormal studies NOT set aside. "Likely abnormal": at or above the rule-in threshold. '
        "Intervals are exact (Clopper-Pearson) 95% intervals."
    )
    borrowed = sorted({part for part in triaged["predicted_part"] if points.basis(part, "likely normal") == SITE_WIDE})
    if borrowed:
        note += (f" Parts without a rule-out of their own use the site-wide one ({', '.join(borrowed)}): its guarantee "
                 "is marginal over the calibration studies' mix of body parts, not for any one part.")  # fmt: skip
    figure = operating_curve_figure(triaged, summary, points)
    return {"note": note, "header": TRIAGE_HEADER, "rows": summary_rows(summary), "figure": figure,
            "summary": summary}  # fmt: skip


def _confusion_figure(metrics: dict) -> Figure:
    import matplotlib.pyplot as plt

    matrix = np.asarray(metrics["part_confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(BODY_PARTS)):
        for j in range(len(BODY_PARTS)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(BODY_PARTS)), BODY_PARTS, rotation=45, ha="right")
    ax.set_yticks(range(len(BODY_PARTS)), BODY_PARTS)
    ax.set_xlabel("predicted body part")
    ax.set_ylabel("true body part")
    ax.set_title(f"Body part, per image (accuracy {metrics['part_accuracy']:.3f})")
    caption = "Body-part confusion matrix (images; rows: true part, columns: the part head's choice)."
    return Figure("confusion.png", caption, png_bytes(fig))


def roc_figure(studies: pd.DataFrame, blocks: dict) -> Figure:
    """ROC curves per body part and overall; ``blocks[part]`` holds the operating point's sensitivity and
    specificity and the AUROC (the metrics of one gate)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4), sharex=True, sharey=True)
    for ax, part in zip(axes.flat, (*BODY_PARTS, "overall")):
        group = studies if part == "overall" else studies[studies["body_part"] == part]
        ax.plot([0, 1], [0, 1], color="0.8", lw=1)
        ax.set_title(part)
        if group["label"].nunique() < 2:
            ax.text(0.5, 0.5, "one class only", ha="center")
            continue
        fpr, tpr, _ = roc_curve(group["label"], group["prob"])
        block = blocks[part]
        ax.plot(fpr, tpr, lw=1.8, label=f"AUROC {block['study_auroc']:.3f}")
        ax.plot(1 - block["specificity"], block["sensitivity"], "o", color="crimson", label="operating point")
        ax.legend(loc="lower right", fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("1 - specificity")
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity")
    caption = (
        "ROC curves per body part (studies, predicted gate); the dot is the decision the checkpoint makes "
        "(its calibration and per-part threshold)."
    )
    return Figure("roc.png", caption, png_bytes(fig))


def _calibration_section(studies: dict[str, pd.DataFrame]) -> tuple[list[tuple[str, float, float, int]], Figure]:
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    rows = []
    for part in (*BODY_PARTS, "overall"):
        groups = {k: v if part == "overall" else v[v["body_part"] == part] for k, v in studies.items()}
        if len(groups["after"]):
            eces = {k: expected_calibration_error(g["prob"], g["label"]) for k, g in groups.items()}
            rows.append((part, eces["before"], eces["after"], len(groups["after"])))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfectly calibrated")
    overall = rows[-1]
    for key, ece, style in (("before", overall[1], "s-"), ("after", overall[2], "o-")):
        group = studies[key]
        observed, predicted = calibration_curve(group["label"], group["prob"], n_bins=10, strategy="uniform")
        ax.plot(predicted, observed, style, label=f"{key} calibration (ECE {ece:.3f})")
    ax.set_xlabel("predicted probability of abnormal (study)")
    ax.set_ylabel("observed share abnormal")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability (studies, predicted gate)")
    caption = (
        "Reliability diagram before calibration (the raw head's sigmoid) and after (the checkpoint's Platt "
        "scaling: per part where val had enough studies, pooled otherwise); 10 equal-width bins."
    )
    return rows, Figure("reliability.png", caption, png_bytes(fig))


def _gallery(studies: pd.DataFrame, table: pd.DataFrame, predictor: Predictor, per_kind: int) -> list:
    """[(kind, title, note, [Figure, ...])]: the deciding view of each chosen study with its Grad-CAM overlay."""
    picks = {
        "tp": studies[(studies["label"] == 1) & (studies["pred"] == 1)].sort_values("prob", ascending=False),
        "fp": studies[(studies["label"] == 0) & (studies["pred"] == 1)].sort_values("prob", ascending=False),
        "fn": studies[(studies["label"] == 1) & (studies["pred"] == 0)].sort_values("prob", ascending=True),
    }
    sections = []
    for kind, title, note in GALLERY:
        items = []
        for i, row in enumerate(picks[kind].head(per_kind).itertuples()):
            paths = table.loc[table["study_id"] == row.study_id, "path"].tolist()
            result = predictor.predict_study(paths, explain=True)
            view = max(range(len(paths)), key=lambda v: result.views[v].abnormal_prob)  # the view that drove it
            image = Image.open(paths[view]).convert("L")
            shown = overlay(image, result.views[view].heatmap)
            shown.thumbnail((320, 320))
            buffer = io.BytesIO()
            shown.save(buffer, format="PNG", optimize=True)
            caption = (
                f"{row.study_id} ({row.body_part}; read as {result.body_part}): p = {result.abnormal_prob:.2f}, "
                f"threshold {result.threshold:.2f}, {len(paths)} view(s)"
            )
            items.append(Figure(f"gallery-{kind}-{i + 1}.png", caption, buffer.getvalue()))
        sections.append((kind, title, note, items))
    return sections


def _fmt(value, interval=None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}"
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def _metric_rows(metrics: dict, gate: str) -> list[list[str]]:
    rows = []
    for part in (*BODY_PARTS, "overall"):
        block = metrics[f"{gate}_gate"].get(part)
        if not block:
            continue
        cells = [part, str(block["n_studies"])]
        cells += [_fmt(block[key], block.get(f"{key}_ci95")) for key, _ in COLUMNS]
        cells.append(f"{PAPER_TEST_KAPPA[part]:.3f}")
        rows.append(cells)
    return rows


_HEADER = ["body part", "studies", *(label for _, label in COLUMNS), "paper kappa (test)"]
_GATE_TITLES = {
    "predicted": "Predicted gate (the part head picks the anomaly head: what the app does)",
    "true": "True gate (the true body part picks the anomaly head)",
}
_CI_NOTE = (
    "Brackets: 95% bootstrap interval ({resamples} resamples of studies, seed {seed}). Paper kappa (test): the "
    "MURA paper's model on the hidden TEST set (Rajpurkar et al. 2017, Table 2), a different split from this "
    "one, shown for context only."
)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def html_image(figure: Figure, css: str = "") -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(figure.caption)}" class="{css}">'


def html_table(header: list[str], rows: list[list[str]], css: str = "metrics") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def html_page(title: str, sections: list[str]) -> str:
    """A self-contained page in the reports' one style."""
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}.scroll{overflow-x:auto}"
        "th,td{border:1px solid #ccc;padding:4px 6px;text-align:right;white-space:nowrap}th{background:#f2f2f2}"
        "td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:13px}"
        "img{max-width:100%}.gallery{display:flex;flex-wrap:wrap;gap:12px}"
        ".card{width:330px;margin:0}.card figcaption,figcaption{font-size:13px;color:#444}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def _markdown(assets: str, metrics, source, figures, calibration_rows, gallery, triage) -> str:
    table = markdown_table
    boot = metrics.get("bootstrap", {"resamples": 0, "seed": "-"})
    parts = [
        "# Evaluation report",
        "",
        f"{source}",
        "",
        "Research and education only; not a medical device.",
    ]
    for gate in GATES:
        parts += ["", f"## {_GATE_TITLES[gate]}", "", table(_HEADER, _metric_rows(metrics, gate))]
    parts += ["", _CI_NOTE.format(**boot)]
    by_name = {f.name: f for f in figures}
    parts += [
        "",
        "## Body part",
        "",
        f"![confusion matrix]({assets}/confusion.png)",
        "",
        by_name["confusion.png"].caption,
    ]
    parts += ["", "## ROC curves", "", f"![ROC curves]({assets}/roc.png)", "", by_name["roc.png"].caption]
    ece_rows = [[p, f"{b:.3f}", f"{a:.3f}", str(n)] for p, b, a, n in calibration_rows]
    parts += ["", "## Calibration", "", f"![reliability]({assets}/reliability.png)", ""]
    parts += [
        by_name["reliability.png"].caption,
        "",
        table(["body part", "ECE before", "ECE after", "studies"], ece_rows),
    ]
    parts += ["", "## Triage groups", "", triage["note"]]
    if triage["rows"]:
        parts += ["", table(triage["header"], triage["rows"])]
        parts += ["", f"![operating curves]({assets}/operating_curves.png)", "", triage["figure"].caption]
    parts += ["", "## Grad-CAM gallery"]
    for _, title, note, items in gallery:
        parts += ["", f"### {title}", "", f"{note}.", ""]
        parts += [f"![{html.escape(f.caption)}]({assets}/{f.name})  \n{f.caption}\n" for f in items] or ["None."]
    return "\n".join(parts) + "\n"


def _html(metrics, source, figures, calibration_rows, gallery, triage) -> str:
    img, table = html_image, html_table
    boot = metrics.get("bootstrap", {"resamples": 0, "seed": "-"})
    by_name = {f.name: f for f in figures}
    sections = [f"<h1>Evaluation report</h1><p>{html.escape(source)}</p>"]
    sections.append('<p class="note">Research and education only; not a medical device.</p>')
    for gate in GATES:
        sections.append(f"<h2>{html.escape(_GATE_TITLES[gate])}</h2>" + table(_HEADER, _metric_rows(metrics, gate)))
    sections.append(f'<p class="note">{html.escape(_CI_NOTE.format(**boot))}</p>')
    for title, name in (("Body part", "confusion.png"), ("ROC curves", "roc.png"), ("Calibration", "reliability.png")):
        figure = by_name[name]
        sections.append(f"<h2>{title}</h2><figure>{img(figure)}<figcaption>{html.escape(figure.caption)}</figcaption>")
        if name == "reliability.png":
            rows = [[p, f"{b:.3f}", f"{a:.3f}", str(n)] for p, b, a, n in calibration_rows]
            sections.append(table(["body part", "ECE before", "ECE after", "studies"], rows, css="ece"))
        sections.append("</figure>")
    sections.append(f'<h2>Triage groups</h2><p class="note">{html.escape(triage["note"])}</p>')
    if triage["rows"]:
        sections.append(table(triage["header"], triage["rows"], css="triage"))
        figure = triage["figure"]
        sections.append(f"<figure>{img(figure)}<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    sections.append("<h2>Grad-CAM gallery</h2>")
    for kind, title, note, items in gallery:
        cards = "".join(
            f"<figure class='card'>{img(f)}<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in items
        )
        sections.append(
            f"<h3>{html.escape(title)}</h3><p>{html.escape(note)}.</p>"
            f"<div class='gallery' id='gallery-{kind}'>{cards or '<p>None.</p>'}</div>"
        )
    return html_page("mura-mt evaluation report", sections)
