"""The Worklist tab and the ``/worklist`` API, mounted by ``app.build_demo`` when the app has a worklist store.

Callbacks are thin: the rows, the study's pictures and its answer come from ``mura_mt.web.worklist``. The table refreshes
itself every few seconds, and only when the store changed (``store.version``), so an idle page sends nothing and a
reader's selection and scroll stay where they are; the study shown below the table changes only when the reader picks
another. The study's pictures travel inside the page as data: URIs, never as files (patient data never reaches
Gradio's file route or cache).
"""

from __future__ import annotations

import html
import time

import gradio as gr

from mura_mt.access.gate import Access
from mura_mt.access.roles import WORKLIST
from mura_mt.audit import AuditLog
from mura_mt.dicom_node.database import StoreUnavailable
from mura_mt.site.labels import LabelError, SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.labels import BODY_PARTS
from mura_mt.web.login import WebAccess
from mura_mt.web.performance_tab import drift_banner
from mura_mt.web.worklist import StudyViews, answer_of, api_rows, table_html, warnings_of

REFRESH_S = 3.0
PAGE_SIZE = 100
EMPTY = "Select a study in the list to see its views, their Grad-CAM overlays and the whole answer."
# The table is plain HTML: Gradio's Dataframe costs ~0.3 s of page start-up (measured 915 against 633 ms). A click on
# a row is delegated to the component's element, which survives every refresh, and so does its scroll position. The
# sticky header's top of -10 px covers the container's 10 px padding.
ON_CLICK = """element.addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-uid]');
    if (!row) return;
    element.querySelectorAll('tr.selected').forEach((r) => r.classList.remove('selected'));
    row.classList.add('selected');
    trigger('click', {uid: row.dataset.uid});
});"""
TABLE_CSS = """
table.worklist { width: 100%; border-collapse: collapse; font-size: var(--text-sm); }
table.worklist th { position: sticky; top: -10px; z-index: 1; background: var(--background-fill-primary);
                   text-align: left; box-shadow: 0 1px 0 var(--border-color-primary); }
table.worklist th, table.worklist td { padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary);
                                       white-space: nowrap; }
table.worklist td:nth-child(8) { white-space: normal; min-width: 16em; }
table.worklist tbody tr { cursor: pointer; }
table.worklist tbody tr:hover { background: var(--background-fill-secondary); }
table.worklist tr.g-abnormal td:first-child { border-left: 4px solid #d62728; font-weight: 600; }
table.worklist tr.g-warning td:first-child { border-left: 4px solid #ff7f0e; font-weight: 600; }
table.worklist tr.g-in-progress td:first-child { border-left: 4px solid #1f77b4; }
table.worklist tr.g-normal td:first-child { border-left: 4px solid #2ca02c; }
table.worklist tr.g-likely-normal td:first-child { border-left: 4px solid #98df8a; }
table.worklist tr.g-not-analysed td:first-child { border-left: 4px solid #7f7f7f; }
table.worklist tr.read { opacity: 0.6; }
table.worklist tr.selected { outline: 2px solid var(--color-accent); outline-offset: -2px; }
"""


def worklist_tab(demo: gr.Blocks, store: WorklistStore, predictor, refresh_s: float = REFRESH_S,
                 page_size: int = PAGE_SIZE, audit: AuditLog | None = None, drift_monitor=None,
                 access: WebAccess | None = None) -> None:  # fmt: skip
    """Build the tab (inside ``gr.Tabs``) and the hidden ``/worklist`` endpoint, inside ``demo``. With ``audit``,
    what a person asks for is recorded under their login before it is shown: the list (opened, a page turned, the
    API), a study opened, a study marked (un)read. The automatic refreshes of an open page are not. A drift alarm of
    ``drift_monitor`` (``site.monitoring.DriftMonitor``) is shown above the list. ``access``: only readers
    see the list, its studies and record reads; anyone else is refused (in the page and the API), and the refusal is
    audited."""
    access = access or WebAccess(Access())
    views = StudyViews(store, predictor)
    labels = SiteLabels(store)

    def record(action: str, request: gr.Request | None, study_uid: str | None = None, detail: str = "") -> None:
        if audit is not None:
            user = getattr(request, "username", None) or "anonymous"
            remote = request.client.host if request is not None and request.client else None
            audit.record(action, user, remote, study_uid, detail)

    def page_of(page: int, selected: str | None = None) -> tuple[str, str, int]:
        rows, total = store.worklist(limit=page_size, offset=page * page_size)
        if not rows and page > 0:  # the list shrank under the reader: show its last page
            page = max(0, (total - 1) // page_size)
            rows, total = store.worklist(limit=page_size, offset=page * page_size)
        first = page * page_size + 1 if rows else 0
        summary = (f"**{total} studies**, most urgent first; showing {first}-{page * page_size + len(rows)}. "
                   f"Abnormal, then warnings, then in progress, normal, not analysed; read studies last.")  # fmt: skip
        if drift_monitor is not None and (drift := drift_monitor.check())["alarm"]:
            summary = f"{drift_banner(drift)} See the Performance tab.\n\n{summary}"
        return table_html(rows, selected), summary, page

    def refresh(page: int, seen, selected: str | None = None, force: bool = False):
        try:
            version = store.version()
            if version == seen and not force:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            rows, summary, page = page_of(page, selected)
        except StoreUnavailable as err:  # the list stays as it was; the next refresh tries again
            when = time.strftime("%H:%M:%S")
            return gr.skip(), f"⚠️ **{html.escape(str(err))}** ({when}); the list below may be out of date.", page, None
        return rows, summary, page, version

    def refused(request: gr.Request, page: int):
        """The listing's outputs when the user may not see the list (None: they may)."""
        refusal = access.refusal(request, WORKLIST, "the worklist")
        return None if refusal is None else ("", f"🔒 **{html.escape(refusal)}**", page, None)

    def opened(page: int, seen, selected: str | None, request: gr.Request):
        if (refusal := refused(request, page)) is not None:
            return refusal
        record("worklist listed", request, detail=f"page {page + 1}")
        return refresh(page, seen, selected)

    def tick(page: int, seen, selected: str | None, request: gr.Request):
        if not access.allows(request, WORKLIST):  # the page's own timer: neither a use of the session nor audited
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return refresh(page, seen, selected)

    def previous_page(page: int, selected: str | None, request: gr.Request):
        if (refusal := refused(request, page)) is not None:
            return refusal
        record("worklist listed", request, detail=f"page {max(0, page - 1) + 1}")
        return refresh(max(0, page - 1), None, selected, True)

    def next_page(page: int, selected: str | None, request: gr.Request):
        if (refusal := refused(request, page)) is not None:
            return refusal
        record("worklist listed", request, detail=f"page {page + 2}")
        return refresh(page + 1, None, selected, True)

    def show(evt: gr.EventData, request: gr.Request):
        access.require(request, WORKLIST, "a study of the worklist")
        uid = getattr(evt, "uid", None)
        try:
            study = store.study(uid) if uid else None
        except StoreUnavailable as err:
            raise gr.Error(str(err)) from None
        if study is None:
            return None, EMPTY, "", None, gr.update(interactive=False)
        record("study opened", request, uid)
        return uid, *_study_panel(study, views, labels), _read_button(study)

    def toggle_read(uid: str | None, page: int, request: gr.Request):
        access.require(request, WORKLIST, "marking studies read")
        try:
            study = store.study(uid) if uid else None
            if study is None:
                raise gr.Error("Select a study first.")
            record("study marked unread" if study["read"] else "study marked read", request, uid)
            store.set_read(uid, not study["read"])
        except StoreUnavailable as err:
            raise gr.Error(str(err)) from None
        return (*refresh(page, None, uid, True), _read_button(store.study(uid)))

    def worklist(status: str, since: str, limit: float, offset: float, request: gr.Request) -> list[dict]:
        """The triage worklist: studies received from PACS by the mura-mt DICOM node(s), most urgent first:
        abnormal without a warning (most probable first), then studies with a warning, then studies in progress,
        normal, skipped and failed (newest first within each); read studies last. Holds patient identifiers.

        Args:
            status: "" for all, or one of receiving, waiting, analysed, skipped, failed, delivered.
            since: "" for all, or only studies received at or after this ISO 8601 time (UTC unless it says) or unix
                time in seconds.
            limit: at most this many studies (1 to 1000).
            offset: skip this many studies first (paging).

        Returns:
            rows: one dict a study with study_uid, accession, patient_id, received (ISO 8601, UTC), views, status,
                body_part, abnormal_prob, is_abnormal, triage ("likely normal", "uncertain", "likely abnormal", or
                null without operating points), triage_basis (whose guarantee: the body part's own operating point
                or "site-wide"), warnings (for skipped and failed studies: why) and read.
        """
        access.require(request, WORKLIST, "/worklist")
        try:
            rows = api_rows(store, status, since, int(limit or PAGE_SIZE), int(offset or 0))
            record("worklist listed", request, detail=f"API: {len(rows)} rows")
            return rows
        except (ValueError, StoreUnavailable) as err:  # bad input, or the database is down: say which
            raise gr.Error(str(err)) from None

    def record_read(study_uid: str, label: str, body_part: str = "", note: str = "", request: gr.Request = None) -> dict:
        """Record the reader's read of one study (ground truth for the site's own accuracy figures): "abnormal" or
        "normal", optionally the correct body part and a note, under the reader's login. A later read replaces it.

        Args:
            study_uid: the Study Instance UID of a study in the worklist.
            label: "abnormal" or "normal".
            body_part: "" or the correct body part (elbow, finger, forearm, hand, humerus, shoulder, wrist).
            note: free text kept with the read.

        Returns:
            read: the study_uid, label, body_part, source ("reader") and author recorded.
        """
        access.require(request, WORKLIST, "/record_read")
        author = getattr(request, "username", None) or "anonymous"
        try:
            labels.record(label, "reader", author, study_uid=study_uid, body_part=body_part, note=note)
        except (LabelError, StoreUnavailable) as err:
            raise gr.Error(str(err)) from None
        record("read recorded", request, study_uid, detail=str(label))
        return {"study_uid": study_uid, "label": str(label).lower(), "body_part": body_part, "source": "reader",
                "author": author}  # fmt: skip

    def read_from_page(label: str):
        def handler(uid: str | None, body_part: str, note: str, request: gr.Request):
            if not uid:
                raise gr.Error("Select a study first.")
            record_read(uid, label, body_part, note, request)
            study = store.study(uid)
            return _study_panel(study, views, labels)[0]

        return handler

    with gr.Tab("Worklist", id="worklist", elem_id="worklist-tab"):
        page, seen, selected = gr.State(0), gr.State(None), gr.State(None)
        summary = gr.Markdown(elem_id="worklist-summary")
        grid = gr.HTML(
            elem_id="worklist-table",
            max_height=520,
            css_template=TABLE_CSS,
            js_on_load=ON_CLICK,
        )
        with gr.Row():
            earlier = gr.Button("◀ Previous page", size="sm", elem_id="worklist-previous")
            later = gr.Button("Next page ▶", size="sm", elem_id="worklist-next")
            read = gr.Button("Mark as read", size="sm", interactive=False, elem_id="worklist-read")
        with gr.Accordion("Record your read (the site's own ground truth)", open=False, elem_id="worklist-reading"):
            with gr.Row():
                read_abnormal = gr.Button("Abnormal", size="sm", elem_id="worklist-read-abnormal")
                read_normal = gr.Button("Normal", size="sm", elem_id="worklist-read-normal")
                read_part = gr.Dropdown(["", *BODY_PARTS], value="", label="correct body part (optional)")
                read_note = gr.Textbox(label="note (optional)", max_length=500)
        verdict = gr.Markdown(EMPTY, elem_id="worklist-verdict")
        pictures = gr.HTML(elem_id="worklist-views")
        with gr.Accordion("Answer (JSON)", open=False):
            answer = gr.JSON(elem_id="worklist-answer", label="answer")
        timer = gr.Timer(refresh_s)
        with gr.Column(visible=False):  # API-only (inside the tab: a hidden block directly under Tabs breaks them)
            uid_in, label_in, part_in, note_in = gr.Textbox(), gr.Textbox(), gr.Textbox(value=""), gr.Textbox(value="")
            read_out = gr.JSON(label="read")
            # callable by gradio_client (behind the login), never an MCP tool: an agent must not write ground truth
            gr.Button().click(record_read, [uid_in, label_in, part_in, note_in], read_out, api_name="record_read",
                              api_visibility="undocumented")  # fmt: skip
            status_in, since_in = gr.Textbox(value=""), gr.Textbox(value="")
            limit_in, offset_in = gr.Number(value=PAGE_SIZE, precision=0), gr.Number(value=0, precision=0)
            rows_out = gr.JSON(label="rows")
            gr.Button().click(worklist, [status_in, since_in, limit_in, offset_in], rows_out, api_name="worklist")

    listing = [grid, summary, page, seen]
    quiet = {"api_visibility": "private", "show_progress": "hidden", "queue": False}
    # Each page load starts from the store as it is then (a private load event: callable values would be MCP tools).
    demo.load(opened, [page, seen, selected], listing, **quiet)
    timer.tick(tick, [page, seen, selected], listing, **quiet)
    earlier.click(previous_page, [page, selected], listing, **quiet)
    later.click(next_page, [page, selected], listing, **quiet)
    grid.click(show, None, [selected, verdict, pictures, answer, read], api_visibility="private")
    read.click(toggle_read, [selected, page], [*listing, read], api_visibility="private")
    for button, label in ((read_abnormal, "abnormal"), (read_normal, "normal")):
        button.click(read_from_page(label), [selected, read_part, read_note], verdict, api_visibility="private")


def _read_button(study: dict):
    return gr.update(value="Mark as unread" if study["read"] else "Mark as read", interactive=True)


def _study_panel(study: dict, views: StudyViews, labels: SiteLabels) -> tuple[str, str, dict]:
    """(warnings and verdict, the views beside their overlays, the whole answer)."""
    patient = str(study["patient_name"] or "").replace("^", " ")
    lines = [f"### {html.escape(patient)} {html.escape(study['patient_id'] or '')} · accession "
             f"{html.escape(study['accession'] or '-')} · {study['views']} view(s)"]  # fmt: skip
    lines += [f"> ⚠️ **{html.escape(w)}**" for w in warnings_of(study)]
    if study["abnormal_prob"] is not None and study["status"] not in ("skipped", "failed"):
        label = "ABNORMAL" if study["is_abnormal"] else "NORMAL"
        stored = answer_of(study)["answer"] or {}
        threshold = f" (threshold {stored['threshold']:.2f})" if "threshold" in stored else ""
        lines.append(f"## {label}: abnormality probability {study['abnormal_prob']:.2f}{threshold}")
        lines.append(f"Decided by the **{study['body_part']}** head; status {study['status']}.")
        if study.get("triage"):
            points = views.predictor.serving.operating_points
            basis = points.basis(study["body_part"], study["triage"]) if points is not None else None
            whose = (f"the checkpoint's site-wide operating point: {study['body_part']} has none of its own"
                     if basis == "site-wide" else f"the checkpoint's operating points for {study['body_part']}")  # fmt: skip
            lines.append(f"Triage: **{study['triage']}** ({whose}).")
    else:
        lines.append(f"Status: **{study['status']}**.")
    truth = labels.current(study["study_uid"])
    if truth is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(truth["recorded"]))
        lines.append(f"Read: **{'abnormal' if truth['label'] else 'normal'}** ({html.escape(truth['source'])}, "
                     f"{html.escape(truth['author'])}, {when}).")  # fmt: skip
    pictures, note = views.pictures(study)
    if note:
        lines.append(f"_{html.escape(note)}_")
    figures = "".join(
        f'<figure class="worklist-view"><img src="{view}" alt="{html.escape(caption)}: original">'
        f'<img src="{cam}" alt="{html.escape(caption)}: Grad-CAM"><figcaption>{html.escape(caption)}</figcaption>'
        "</figure>"
        for caption, view, cam in pictures
    )
    style = (
        "<style>.worklist-view{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin:0 0 12px;max-width:960px}"
        ".worklist-view img{width:100%;height:auto}.worklist-view figcaption{grid-column:1/3}</style>"
    )
    return "\n\n".join(lines), style + figures if figures else "", answer_of(study)
