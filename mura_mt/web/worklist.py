"""The worklist as people and programs read it, built on the store (``dicom_node.store``); no Gradio here.

- ``api_rows``: the rows of the ``/worklist`` API, in worklist order, with plain JSON values.
- ``table_html``: the same rows as the web page's table shows them.
- ``StudyViews``: a study's views beside their Grad-CAM overlays, from whichever node's copy of the files this
  machine can read, answered by the app's Predictor (a few per study, cached by the study's revision).
"""

from __future__ import annotations

import base64
import html
import io
import json
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.studies import is_radiograph
from mura_mt.inference.explain import overlay
from mura_mt.imaging.io import InvalidImageError, load_radiograph
from mura_mt.site.window import iso, parse_since

API_KEYS = ("study_uid", "accession", "patient_id", "received", "views", "status", "body_part", "abnormal_prob",
            "is_abnormal", "triage", "triage_basis", "warnings", "read")  # fmt: skip
TABLE_HEADERS = ["Priority", "Received", "Accession", "Patient", "Body part", "P(abnormal)", "Verdict", "Warnings",
                 "Status", "Read"]  # fmt: skip
NOT_ANSWERED = ("skipped", "failed")


def warnings_of(row: dict) -> list[str]:
    """The model's warnings, or for a study that was not answered, why."""
    if row["status"] in NOT_ANSWERED and row.get("detail"):
        return [f"{row['status']}: {row['detail']}"]
    return list(row["warnings"])


def triage_basis(row: dict) -> str | None:
    """Whose guarantee stands behind the study's "likely ..." group (the part's own operating point or "site-wide"),
    from the answer the node stored; None without operating points or an answer."""
    if not row.get("answer"):
        return None
    return (json.loads(row["answer"]) or {}).get("triage_basis")


def api_rows(store: WorklistStore, status: str | None = None, since=None, limit: int = 100,
             offset: int = 0) -> list[dict]:  # fmt: skip
    """One page of the worklist for programs: dicts with ``API_KEYS``; ``received`` in ISO 8601 (UTC)."""
    if not 1 <= int(limit) <= 1000:
        raise ValueError(f"limit must be 1 to 1000; got {limit}")
    if int(offset) < 0:
        raise ValueError(f"offset must be 0 or more; got {offset}")
    status = status.strip() if isinstance(status, str) and status.strip() else None  # the store checks the rest
    rows, _ = store.worklist(limit=int(limit), offset=int(offset), status=status, since=parse_since(since))
    return [
        {
            "study_uid": row["study_uid"],
            "accession": row["accession"] or "",
            "patient_id": row["patient_id"] or "",
            "received": iso(row["received"]),
            "views": int(row["views"]),
            "status": row["status"],
            "body_part": row["body_part"],
            "abnormal_prob": None if row["abnormal_prob"] is None else round(float(row["abnormal_prob"]), 4),
            "is_abnormal": None if row["is_abnormal"] is None else bool(row["is_abnormal"]),
            "triage": row["triage"],
            "triage_basis": triage_basis(row),
            "warnings": warnings_of(row),
            "read": bool(row["read"]),
        }
        for row in rows
    ]


def table_html(rows: list[dict], selected: str | None = None) -> str:
    """The page's table (``TABLE_HEADERS``) from ``store.worklist`` rows: one ``<tr data-uid>`` a study, its group and
    read mark as classes. Every value is escaped: names and accessions come from DICOM headers, i.e. from outside."""
    body = []
    for row in rows:
        answered = row["abnormal_prob"] is not None and row["status"] not in NOT_ANSWERED
        verdict = ("ABNORMAL" if row["is_abnormal"] else "normal") if answered else ""
        if answered and row.get("triage"):
            verdict += f" · {row['triage']}"
        patient = " ".join(
            part for part in (str(row["patient_name"] or "").replace("^", " "), row["patient_id"]) if part
        )
        cells = [
            row["group"],
            datetime.fromtimestamp(row["received"]).strftime("%Y-%m-%d %H:%M:%S"),
            row["accession"] or "",
            patient,
            row["body_part"] or "",
            f"{row['abnormal_prob']:.2f}" if answered else "",
            verdict,
            " | ".join(warnings_of(row)),
            row["status"],
            "✓" if row["read"] else "",
        ]
        classes = ["g-" + row["group"].replace(" ", "-")] + (["read"] if row["read"] else [])
        if row["study_uid"] == selected:
            classes.append("selected")
        tds = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
        body.append(f'<tr data-uid="{html.escape(row["study_uid"])}" class="{" ".join(classes)}">{tds}</tr>')
    head = "".join(f"<th>{name}</th>" for name in TABLE_HEADERS)
    empty = f'<tr><td colspan="{len(TABLE_HEADERS)}">No studies yet.</td></tr>' if not rows else ""
    return f'<table class="worklist"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}{empty}</tbody></table>'


class StudyViews:
    """A study's pictures for the page: each readable view and its Grad-CAM overlay, as data: URIs (never files, so
    nothing of a patient's reaches Gradio's file route or its cache folder). Cached for the last few studies."""

    MAX_SIDE = 768  # the page shows two pictures side by side; bigger only costs encoding time
    CACHE = 8

    def __init__(self, store: WorklistStore, predictor):
        self.store, self.predictor = store, predictor
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def pictures(self, study: dict) -> tuple[list[tuple[str, str, str]], str | None]:
        """([(caption, view URI, overlay URI)], a note when some or all views cannot be shown here)."""
        key = (study["study_uid"], study["rev"])
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self._render(study)
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return found

    def _render(self, study: dict) -> tuple[list[tuple[str, str, str]], str | None]:
        readable, missing = {}, {}
        for copy in self.store.copies(study["study_uid"]):
            if not is_radiograph(copy) or copy["sop_uid"] in readable:
                continue
            if copy["path"] and Path(copy["path"]).is_file():
                readable[copy["sop_uid"]] = copy["path"]
                missing.pop(copy["sop_uid"], None)
            else:
                missing[copy["sop_uid"]] = copy["node"] if copy["path"] else f"{copy['node']} (deleted after retention)"
        images = []
        for path in readable.values():
            try:
                images.append(load_radiograph(path))
            except (InvalidImageError, OSError):
                missing[path] = "this machine (unreadable)"
        note = None
        if missing:
            where = ", ".join(sorted(set(missing.values())))
            note = f"{len(missing)} view(s) cannot be shown here: their files are on {where}."
        if not images:
            return [], note
        result = self.predictor.predict_study(images, explain=True)
        pictures = []
        for number, (image, view) in enumerate(zip(images, result.views), 1):
            caption = f"view {number}: p(abnormal) {view.abnormal_prob:.2f}"
            pictures.append((caption, _data_uri(image), _data_uri(overlay(image, view.heatmap))))
        if study["abnormal_prob"] is not None and abs(result.abnormal_prob - study["abnormal_prob"]) > 1e-3:
            extra = (f"The overlays come from this app's model, which answers p={result.abnormal_prob:.2f}; the node "
                     f"answered p={study['abnormal_prob']:.2f}.")  # fmt: skip
            note = f"{note} {extra}" if note else extra
        return pictures, note


def answer_of(study: dict) -> dict:
    """The whole stored answer with the study's state, for the page's JSON view."""
    answer = json.loads(study["answer"]) if study.get("answer") else None
    state = {k: study[k] for k in ("status", "node", "delivery", "detail", "views", "accession") if study.get(k)}
    return {"state": {**state, "received": iso(study["received"]), "read": bool(study["read"])}, "answer": answer}


def _data_uri(image) -> str:
    image = image.copy()
    image.thumbnail((StudyViews.MAX_SIDE, StudyViews.MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
