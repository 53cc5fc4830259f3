"""The Worklist tab and the ``/worklist`` API, mounted by ``app.build_demo`` when the app has a worklist store.

Callbacks are thin: the rows, the study's pictures and its answer come from ``mura_mt.worklist``. The table refreshes
itself every few seconds, and only when the store changed (``store.version``), so an idle page sends nothing and a
reader's selection and scroll stay where they are; the study shown below the table changes only when the reader picks
another. The study's pictures travel inside the page as data: URIs, never as files (patient data never reaches
Gradio's file route or cache).
"""

from __future__ import annotations

import html

import gradio as gr

from mura_mt.dicom_node.store import WorklistStore
from mura_mt.worklist import TABLE_HEADERS, StudyViews, answer_of, api_rows, table, warnings_of

REFRESH_S = 3.0
PAGE_SIZE = 100
EMPTY = "Select a study in the list to see its views, their Grad-CAM overlays and the whole answer."


def worklist_tab(store: WorklistStore, predictor, refresh_s: float = REFRESH_S, page_size: int = PAGE_SIZE) -> None:
    """Build the tab (inside ``gr.Tabs``) and the hidden ``/worklist`` endpoint, inside the caller's ``gr.Blocks``."""
    views = StudyViews(store, predictor)

    def page_of(page: int) -> tuple[list[list], str, int]:
        rows, total = store.worklist(limit=page_size, offset=page * page_size)
        if not rows and page > 0:  # the list shrank under the reader: show its last page
            page = max(0, (total - 1) // page_size)
            rows, total = store.worklist(limit=page_size, offset=page * page_size)
        first = page * page_size + 1 if rows else 0
        summary = (f"**{total} studies**, most urgent first; showing {first}-{page * page_size + len(rows)}. "
                   f"Abnormal, then warnings, then in progress, normal, not analysed; read studies last.")  # fmt: skip
        return table(rows), summary, page

    def refresh(page: int, seen, force: bool = False):
        version = store.version()
        if version == seen and not force:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        rows, summary, page = page_of(page)
        return rows, summary, page, version

    def turn(page: int, step: int):
        return refresh(max(0, page + step), None, True)

    def show(evt: gr.SelectData):
        uid = evt.row_value[-1] if evt.row_value else None
        study = store.study(uid) if uid else None
        if study is None:
            return None, EMPTY, "", None, gr.update(interactive=False)
        return uid, *_study_panel(study, views), _read_button(study)

    def toggle_read(uid: str | None, page: int):
        study = store.study(uid) if uid else None
        if study is None:
            raise gr.Error("Select a study first.")
        store.set_read(uid, not study["read"])
        return (*refresh(page, None, True), _read_button(store.study(uid)))

    def worklist(status: str, since: str, limit: float, offset: float) -> list[dict]:
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
                body_part, abnormal_prob, is_abnormal, warnings (for skipped and failed studies: why) and read.
        """
        try:
            return api_rows(store, status, since, int(limit or PAGE_SIZE), int(offset or 0))
        except ValueError as err:
            raise gr.Error(str(err)) from None

    with gr.Tab("Worklist", id="worklist", elem_id="worklist-tab"):
        page, seen, selected = gr.State(0), gr.State(None), gr.State(None)
        # Callable values: each page load starts from the store as it is then.
        summary = gr.Markdown(lambda: page_of(0)[1], elem_id="worklist-summary")
        grid = gr.Dataframe(
            lambda: page_of(0)[0],
            headers=TABLE_HEADERS,
            interactive=False,
            max_height=520,
            column_widths=["8%", "13%", "9%", "14%", "6%", "6%", "7%", "19%", "7%", "4%", "7%"],
            wrap=True,
            elem_id="worklist-table",
            label="Worklist",
        )
        with gr.Row():
            earlier = gr.Button("◀ Previous page", size="sm", elem_id="worklist-previous")
            later = gr.Button("Next page ▶", size="sm", elem_id="worklist-next")
            read = gr.Button("Mark as read", size="sm", interactive=False, elem_id="worklist-read")
        verdict = gr.Markdown(EMPTY, elem_id="worklist-verdict")
        pictures = gr.HTML(elem_id="worklist-views")
        with gr.Accordion("Answer (JSON)", open=False):
            answer = gr.JSON(elem_id="worklist-answer", label="answer")
        timer = gr.Timer(refresh_s)

    listing = [grid, summary, page, seen]
    quiet = {"api_visibility": "private", "show_progress": "hidden", "queue": False}
    timer.tick(refresh, [page, seen], listing, **quiet)
    earlier.click(lambda p: turn(p, -1), [page], listing, **quiet)
    later.click(lambda p: turn(p, +1), [page], listing, **quiet)
    grid.select(show, None, [selected, verdict, pictures, answer, read], api_visibility="private")
    read.click(toggle_read, [selected, page], [*listing, read], api_visibility="private")
    with gr.Column(visible=False):  # API-only
        status_in, since_in = gr.Textbox(value=""), gr.Textbox(value="")
        limit_in, offset_in = gr.Number(value=PAGE_SIZE, precision=0), gr.Number(value=0, precision=0)
        rows_out = gr.JSON(label="rows")
        gr.Button().click(worklist, [status_in, since_in, limit_in, offset_in], rows_out, api_name="worklist")


def _read_button(study: dict):
    return gr.update(value="Mark as unread" if study["read"] else "Mark as read", interactive=True)


def _study_panel(study: dict, views: StudyViews) -> tuple[str, str, dict]:
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
    else:
        lines.append(f"Status: **{study['status']}**.")
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
