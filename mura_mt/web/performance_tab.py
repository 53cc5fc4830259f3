"""The Performance tab and the ``/performance`` API: the site's own accuracy, from the labels that came back, as
``scripts/site_report.py`` computes it (``SiteLabels.evidence``: the same metrics and bootstrap as ``evaluate.py``),
over a window the user picks, with the drift monitor's alarms on top. The figures are computed once and shared by
every page and call (``site.performance.SharedEvidence``); the page shows them again when they change.
"""

from __future__ import annotations

import html
import time

import gradio as gr

from mura_mt.access.gate import Access
from mura_mt.access.roles import WORKLIST
from mura_mt.dicom_node.database import StoreUnavailable
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.site.labels import LabelError
from mura_mt.site.performance import PERIOD_S, SharedEvidence, Window
from mura_mt.evaluation.site import EXACT_BOOTSTRAP_MAX, MIN_STUDIES, TOO_FEW
from mura_mt.inference.operating_points import rule_out_needs, still_needed
from mura_mt.labels import BODY_PARTS
from mura_mt.web.login import WebAccess
from mura_mt.site.window import iso, parse_since

WINDOWS = {"last 7 days": 7, "last 30 days": 30, "last 90 days": 90, "all": None}
DEFAULT_WINDOW = "last 30 days"
SOURCES = ("any", "reader", "ris", "import")
REFRESH_S = 5.0
TABLE_CSS = """
table.metrics { border-collapse: collapse; font-size: var(--text-sm); }
table.metrics th, table.metrics td { padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary);
                                     text-align: right; white-space: nowrap; }
table.metrics td:first-child, table.metrics th:first-child { text-align: left; }
"""


def drift_banner(drift: dict) -> str:
    """A line for the top of a tab: the alarms, or that there are none, or why drift is not watched."""
    if drift.get("status") != "checked":
        return f"Drift: {drift.get('detail') or drift.get('status')}."
    alarms = [test for test in drift["tests"] if test["alarm"]]
    if not alarms:
        return f"Drift: no alarm over the last {drift['window']['studies']} studies."
    named = "; ".join(f"{t['name']} ({t['statistic_name']} {t['statistic']:.3g}, p = {t['p_value']:.2g})" for t in alarms)
    return f"⚠️ **Drift alarm** over the last {drift['window']['studies']} studies: {named}."


def _points_line(metrics: dict, sensitivity: float = 0.98, confidence: float = 0.95) -> str:
    """How long until the site's labels can carry its own operating points: the labelled abnormal studies a rule-out
    needs, per part and site-wide, against what the window holds."""
    needs = rule_out_needs(sensitivity, confidence)
    groups = [("site-wide", metrics["overall"])] + [(p, metrics[p]) for p in BODY_PARTS if p in metrics]
    more = {name: still_needed(block["n_positive"], sensitivity, confidence) for name, block in groups}
    said = "; ".join(f"{name} {f'{n} more' if n else 'enough'}" for name, n in more.items())
    return (f"Operating points of the site's own (python scripts/calibrate_site.py): a rule-out at sensitivity "
            f"{sensitivity:.2f} with {confidence:.0%} confidence needs {needs} labelled abnormal studies; in this "
            f"window: {said or 'no labels yet'}. A part without enough uses the site-wide point.")


def performance_tab(demo: gr.Blocks, store: WorklistStore, drift_monitor=None, refresh_s: float = REFRESH_S,
                    access: WebAccess | None = None, evidence: SharedEvidence | None = None) -> None:  # fmt: skip
    """Build the tab (inside ``gr.Tabs``) and the ``/performance`` endpoint inside ``demo``; ``access``: readers
    only, the others refused (audited); ``evidence``: the shared figures (one for the app by default)."""
    access = access or WebAccess(Access())
    shared = evidence or SharedEvidence(store, period_s=PERIOD_S)
    # What every page opens with, ready before the first reader asks (an API call's first window is computed while
    # it waits: at most 2 s on a million studies).
    shared.prepare(Window(days=WINDOWS[DEFAULT_WINDOW], picture=True))
    from mura_mt.evaluation.report import html_table
    from mura_mt.evaluation.site_report import HEADER, metric_rows

    def performance(since: str = "", until: str = "", source: str = "any", request: gr.Request = None) -> dict:
        """The site's own accuracy, from the labels that came back (the reader's reads, the RIS's reports,
        imported files), with 95% bootstrap intervals, and the drift monitor's statistics. No patient data.

        Args:
            since: "" for all, or studies received at or after this ISO 8601 time (UTC unless it says) or unix time.
            until: "" for now, or studies received before this time.
            source: "any", "reader", "ris" or "import": whose labels count.

        Returns:
            metrics: overall and one block per body part (study_kappa, study_auroc, sensitivity, specificity,
                accuracy, each with _ci95, n_studies, n_positive and judgement: "too few to judge" below 20
                labelled studies), coverage, agreement, window, bootstrap, computed (when: the figures are shared;
                after the store changes they are computed again in the background, at most every 30 s, and a call
                meanwhile gets the last ones) and drift.
        """
        access.require(request, WORKLIST, "/performance")
        try:
            figures = shared.figures(since=parse_since(since), until=parse_since(until), source=source)
        except (ValueError, LabelError, StoreUnavailable) as err:
            raise gr.Error(str(err)) from None
        drift = drift_monitor.check() if drift_monitor is not None else {"status": "not monitored"}
        return {**figures.metrics, "computed": iso(figures.computed), "drift": drift}

    def shown(window: str, source: str, seen, request: gr.Request):
        refusal = access.refusal(request, WORKLIST, "the site's performance")
        if refusal is not None:
            return "", f"🔒 **{html.escape(refusal)}**", "", "", None
        return render(window, source, seen)

    def tick(window: str, source: str, seen, request: gr.Request):
        if not access.allows(request, WORKLIST):  # the page's own timer: neither a use of the session nor audited
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render(window, source, seen, force=False)

    def render(window: str, source: str, seen, force: bool = True):
        try:
            figures = shared.figures(days=WINDOWS.get(window), source=source, picture=True)
        except (StoreUnavailable, LabelError) as err:
            return gr.skip(), f"⚠️ **{html.escape(str(err))}**", gr.skip(), gr.skip(), seen
        shown_now = (window, source, figures.computed)
        if shown_now == seen and not force:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        metrics = figures.metrics
        drift = drift_monitor.check() if drift_monitor is not None else {"status": "not monitored"}
        coverage, agreement = metrics["coverage"], metrics["agreement"]
        share = f" ({coverage['share']:.0%})" if coverage["share"] is not None else ""
        summary = (
            f"**{coverage['labelled']} labelled** of {coverage['answered']} answered studies{share}, {window}; "
            f"the model and the label agree on {agreement['agree']}, disagree on {agreement['disagree']}. "
            f"Brackets: 95% bootstrap intervals over studies ({shared.resamples} resamples; in a group of more than "
            f"{EXACT_BOOTSTRAP_MAX} studies drawn as counts, AUROC's over 0.005-wide probability bins); a group under "
            f"{MIN_STUDIES} labelled studies is \"{TOO_FEW}\". Computed {time.strftime('%H:%M:%S', time.localtime(figures.computed))}"
            f" (again when the store changes, at most every {shared.period_s:g} s)."
        )
        summary += "\n\n" + _points_line(metrics)
        return drift_banner(drift), summary, html_table(HEADER, metric_rows(metrics)), figures.picture, shown_now

    with gr.Tab("Performance", id="performance", elem_id="performance-tab"):
        alarm = gr.Markdown(elem_id="performance-drift")
        with gr.Row():
            window = gr.Radio(list(WINDOWS), value=DEFAULT_WINDOW, label="window (by arrival)")
            source = gr.Dropdown(list(SOURCES), value="any", label="labels from")
        summary = gr.Markdown(elem_id="performance-summary")
        table = gr.HTML(elem_id="performance-table", css_template=TABLE_CSS)
        reliability = gr.HTML(elem_id="performance-reliability")
        seen = gr.State(None)
        timer = gr.Timer(refresh_s)
        with gr.Column(visible=False):  # API-only (inside the tab: a hidden block directly under Tabs breaks them)
            since_in, until_in, source_in = gr.Textbox(value=""), gr.Textbox(value=""), gr.Textbox(value="any")
            out = gr.JSON(label="performance")
            api_button = gr.Button()

    outputs = [alarm, summary, table, reliability, seen]
    quiet = {"api_visibility": "private", "show_progress": "hidden", "queue": False}
    demo.load(shown, [window, source, seen], outputs, **quiet)
    timer.tick(tick, [window, source, seen], outputs, **quiet)
    window.change(shown, [window, source, seen], outputs, **quiet)
    source.change(shown, [window, source, seen], outputs, **quiet)
    api_button.click(performance, [since_in, until_in, source_in], out, api_name="performance")
