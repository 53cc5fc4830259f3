"""The comparison as files: compare.json, a self-contained compare.html and compare.md with a forest plot.

The forest plot draws, per metric, each group's difference B - A with its paired 95 % interval; a group whose
interval crosses zero cannot tell the two models apart. Provenance (checkpoint hashes, split hash, runtime,
precision) of both sides stands at the top, side by side, so a reader sees what was compared.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from mura_mt.evaluation.compare import METRICS, groups, plain_reading

TITLES = {
    "study_kappa": "study kappa",
    "study_auroc": "study AUROC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
PROVENANCE = ("checkpoint", "weights_sha256", "data", "split_sha256", "n_studies", "runtime", "precision")


def forest_plot(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = groups(result)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 0.45 * len(names) + 1.4), sharey=True)
    for ax, metric in zip(axes, METRICS):
        for row, group in enumerate(names):
            entry = result[group][metric]
            if entry["diff"] is None:
                continue
            y = len(names) - 1 - row
            if entry["ci95"]:
                lo, hi = entry["ci95"]
                decided = lo > 0 or hi < 0
                ax.plot([lo, hi], [y, y], color="#c0392b" if decided else "#555", lw=2)
            ax.plot(entry["diff"], y, "o" if group != "overall" else "D", color="black", ms=5)
        ax.axvline(0, color="#999", lw=1, ls="--")
        ax.set_title(f"{TITLES[metric]}: B - A", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), list(reversed(names)))
    fig.suptitle("Paired differences with 95 % bootstrap intervals (red: the interval excludes 0)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _p(value) -> str:
    return "-" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _rows(result: dict) -> list[list[str]]:
    rows = []
    for group in groups(result):
        entry = result[group]
        for metric in METRICS:
            m = entry[metric]
            interval = f"[{_fmt(m['ci95'][0], True)}, {_fmt(m['ci95'][1], True)}]" if m["ci95"] else "-"
            extra = ""
            if metric == "study_auroc":
                extra = f"DeLong p {_p(entry['delong_p'])}"
            elif metric == "study_kappa":
                extra = (
                    f"McNemar p {_p(entry['mcnemar_p'])} ({entry['only_a_right']} only A right, "
                    f"{entry['only_b_right']} only B right)"
                )
            cells = [_fmt(m["a"]), _fmt(m["b"]), _fmt(m["diff"], True), interval, _p(m["p"]), extra]
            rows.append([group, str(entry["studies"]), TITLES[metric], *cells])
    return rows


HEADER = ["group", "studies", "metric", "A", "B", "B - A", "95 % interval", "bootstrap p", "paired test"]


def _provenance(result: dict) -> list[list[str]]:
    a, b = result["sources"]["a"], result["sources"]["b"]
    keys = ["folder", *PROVENANCE]
    return [[key, str(a.get(key, "-")), str(b.get(key, "-"))] for key in keys]


def write_comparison(out: str | Path, result: dict) -> tuple[Path, Path, Path]:
    """compare.json, compare.md (+ compare_files/forest.png) and a self-contained compare.html in ``out``."""
    out = Path(out)
    (out / "compare_files").mkdir(parents=True, exist_ok=True)
    reading = plain_reading(result)
    json_file = out / "compare.json"
    json_file.write_text(json.dumps({**result, "reading": reading}, indent=2))
    png = forest_plot(result)
    (out / "compare_files" / "forest.png").write_bytes(png)
    boot = result["bootstrap"]
    note = (
        f"Paired bootstrap over studies ({boot['resamples']} resamples, seed {boot['seed']}): both models are scored "
        "on the same resampled studies. p-values are two-sided; DeLong's test compares the AUROCs, McNemar's exact "
        "test the verdicts on the studies where exactly one model is right. Testing 8 groups x 4 metrics, some "
        "p < 0.05 arise by chance: trust differences whose interval clearly excludes 0."
    )
    md = ["# Model comparison: B against A", "", f"**{reading}**", "", "| | A | B |", "|---|---|---|"]
    md += [f"| {k} | {a} | {b} |" for k, a, b in _provenance(result)]
    md += ["", "![forest plot](compare_files/forest.png)", "", "| " + " | ".join(HEADER) + " |"]
    md += ["|" + "---|" * len(HEADER)] + ["| " + " | ".join(r) + " |" for r in _rows(result)]
    md += ["", note, ""]
    md_file = out / "compare.md"
    md_file.write_text("\n".join(md))

    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'

    image = base64.b64encode(png).decode("ascii")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}.scroll{overflow-x:auto}"
        "th,td{border:1px solid #ccc;padding:4px 6px;text-align:right;white-space:nowrap}th{background:#f2f2f2}"
        "td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:13px}img{max-width:100%}"
    )
    body = (
        f"<h1>Model comparison: B against A</h1><p><strong>{html.escape(reading)}</strong></p>"
        + table(["", "A", "B"], _provenance(result))
        + f'<figure><img src="data:image/png;base64,{image}" alt="forest plot of the paired differences"></figure>'
        + table(HEADER, _rows(result))
        + f'<p class="note">{html.escape(note)}</p>'
    )
    html_file = out / "compare.html"
    html_file.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mura-mt model comparison</title>'
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
    return json_file, html_file, md_file
