"""Ground truth that comes back to the site: the reader's read in the Worklist tab, the RIS's final report, a file.

Each label is kept with its source (``reader``, ``ris``, ``import``), author, time and note; a later label of the
same study supersedes the earlier ones, which stay as its history. A label for an accession the node has not seen
yet is kept and attached when the study arrives (``store.attach_waiting_labels``); a message the source sends twice
(the same ``message_id``) is recorded once. The tables are the worklist store's, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mura_mt.dicom_node.store import WorklistStore, count_change
from mura_mt.labels import BODY_PARTS

if TYPE_CHECKING:
    import pandas as pd

SOURCES = ("reader", "ris", "import")
LABEL_VALUES = {"abnormal": 1, "normal": 0, "1": 1, "0": 0}


class LabelError(ValueError):
    """A label that cannot be used, with what is accepted."""


def parse_label(value) -> int:
    """``abnormal`` / ``normal`` (also 1 / 0) -> 1 / 0."""
    key = str(value).strip().lower()
    if key not in LABEL_VALUES:
        raise LabelError(f"label must be one of abnormal, normal (or 1, 0); got {value!r}")
    return LABEL_VALUES[key]


def parse_body_part(value: str | None) -> str:
    part = (value or "").strip().lower()
    if part and part not in BODY_PARTS:
        raise LabelError(f"body_part must be empty or one of {', '.join(BODY_PARTS)}; got {value!r}")
    return part


@dataclass(frozen=True)
class Recorded:
    """What became of a label: ``recorded`` (attached to ``study_uid``), ``waiting`` (kept for an accession no study
    has yet) or ``duplicate`` (this message was recorded before; nothing changed)."""

    outcome: str
    study_uid: str | None


class SiteLabels:
    """The labels of the studies in ``store``."""

    def __init__(self, store: WorklistStore):
        self.store = store

    def record(self, label, source: str, author: str, study_uid: str | None = None, accession: str | None = None,
               body_part: str = "", note: str = "", message_id: str | None = None, keep_waiting: bool = False,
               now: float | None = None) -> Recorded:  # fmt: skip
        """Record one label. The study is found by ``study_uid``, else by ``accession``; with neither found the
        label is refused (LabelError), unless ``keep_waiting`` and an accession is given: a report may come first."""
        value, part = parse_label(label), parse_body_part(body_part)
        if source not in SOURCES:
            raise LabelError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
        if not (study_uid or accession):
            raise LabelError("a label needs a study_uid or an accession number")
        now = time.time() if now is None else now
        with self.store.db.transaction() as tx:
            if message_id:
                seen = tx.rows("SELECT study_uid FROM labels WHERE source = ? AND message_id = ?", (source, message_id))
                if seen:
                    return Recorded("duplicate", seen[0]["study_uid"])
            found = self._find(tx, study_uid, accession)
            if found is None and not (keep_waiting and accession):
                raise LabelError(f"no study {study_uid or 'with accession ' + str(accession)} in the worklist")
            if found is not None:
                tx.lock_study(found)
                tx.execute("UPDATE labels SET superseded = 1 WHERE study_uid = ? AND superseded = 0", (found,))
                tx.execute("UPDATE studies SET rev = rev + 1 WHERE study_uid = ?", (found,))
                count_change(tx)
            tx.execute(
                "INSERT INTO labels (study_uid, accession, label, body_part, source, author, note, recorded, "
                "message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (found, accession or None, value, part, source, author, note, now, message_id or None),
            )
        return Recorded("recorded" if found else "waiting", found)

    def find(self, study_uid: str | None = None, accession: str | None = None) -> str | None:
        """The UID of the study named by ``study_uid``, else by ``accession`` (the newest such study); None."""
        with self.store.db.transaction() as tx:
            return self._find(tx, study_uid, accession)

    @staticmethod
    def _find(tx, study_uid: str | None, accession: str | None) -> str | None:
        if study_uid and tx.value("SELECT COUNT(*) FROM studies WHERE study_uid = ?", (study_uid,)):
            return study_uid
        if accession:
            rows = tx.rows("SELECT study_uid FROM studies WHERE accession = ? ORDER BY received DESC", (accession,))
            if rows:
                return rows[0]["study_uid"]
        return None

    def history(self, study_uid: str) -> list[dict]:
        """Every label of a study, oldest first; the current one has ``superseded`` 0."""
        with self.store.db.transaction() as tx:
            return tx.rows("SELECT * FROM labels WHERE study_uid = ? ORDER BY recorded, id", (study_uid,))

    def current(self, study_uid: str) -> dict | None:
        with self.store.db.transaction() as tx:
            rows = tx.rows("SELECT * FROM labels WHERE study_uid = ? AND superseded = 0", (study_uid,))
        return rows[0] if rows else None

    def answered_count(self, since: float | None = None, until: float | None = None) -> int:
        """Answered studies received in [since, until): the denominator of the label coverage."""
        where, params = _window("status IN ('analysed', 'delivered')", since, until, "received")
        with self.store.db.transaction() as tx:
            return int(tx.value(f"SELECT COUNT(*) FROM studies{tx.indexed_by('studies_answered')} WHERE {where}",
                                params))  # fmt: skip

    def evidence(self, since: float | None = None, until: float | None = None, source: str = "any",
                 resamples: int = 2000, seed: int = 0, detail: bool = True) -> tuple[dict, "pd.DataFrame"]:  # fmt: skip
        """(metrics, studies) of the labelled answers in the window, scored by ``evaluation.site`` (the same
        metrics and bootstrap as ``evaluate.py``); metrics also names the window. ``detail`` False reads only what
        the figures need, column by column (no patient, accession or answer): a year of labels in a second."""
        from mura_mt.evaluation.site import site_metrics, site_studies, site_studies_from_columns

        if detail:
            studies = site_studies(self.labelled_answers(since, until, source))
        else:
            studies = site_studies_from_columns(*self._scores(since, until, source), source)
        metrics = site_metrics(studies, self.answered_count(since, until), resamples, seed)
        metrics["window"] = {"since": since, "until": until, "source": source}
        return metrics, studies

    def _scores(self, since: float | None, until: float | None, source: str) -> list[tuple]:
        """(body part as its index in BODY_PARTS: the label's where it names one, else the model's; abnormal_prob;
        is_abnormal; label) as columns of numbers: what the figures need, nothing that names a patient."""
        where, params = self._labelled_where(since, until, source)
        part = "CASE COALESCE(NULLIF(l.body_part, ''), s.body_part) " + " ".join(
            f"WHEN '{name}' THEN {k}" for k, name in enumerate(BODY_PARTS)) + " ELSE -1 END"  # fmt: skip
        with self.store.db.transaction() as tx:
            # A window: its answered studies by time, then their labels; all of it: the labels (a third of a year's
            # studies), then their studies.
            if since is not None:
                joined = f"studies s{tx.indexed_by('studies_answered')} JOIN labels l ON l.study_uid = s.study_uid"
            else:
                joined = f"labels l {tx.join_in_order()} studies s ON s.study_uid = l.study_uid"
            return tx.columns(
                f"SELECT {part}, s.abnormal_prob, s.is_abnormal, l.label FROM {joined} WHERE {where}", params
            )

    def _labelled_where(self, since: float | None, until: float | None, source: str) -> tuple[str, tuple]:
        if source != "any" and source not in SOURCES:
            raise LabelError(f"source must be any or one of {', '.join(SOURCES)}; got {source!r}")
        where, params = _window("s.status IN ('analysed', 'delivered') AND l.superseded = 0", since, until,
                                "s.received")  # fmt: skip
        if source != "any":
            where += " AND l.source = ?"
            params += (source,)
        return where, params

    def labelled_answers(
        self, since: float | None = None, until: float | None = None, source: str = "any"
    ) -> list[dict]:
        """The answered studies that have a current label (from ``source``, or any), received in [since, until):
        study_uid, accession, patient_id, received, body_part (the model's), abnormal_prob, is_abnormal, answer
        (JSON), label, label_body_part, label_source, label_author."""
        where, params = self._labelled_where(since, until, source)
        with self.store.db.transaction() as tx:
            return tx.rows(
                "SELECT s.study_uid, s.accession, s.patient_id, s.received, s.body_part, s.abnormal_prob, "
                "s.is_abnormal, s.answer, "
                "l.label, l.body_part AS label_body_part, l.source AS label_source, l.author AS label_author "
                f"FROM studies s JOIN labels l ON l.study_uid = s.study_uid WHERE {where} "
                "ORDER BY s.received, s.study_uid",
                params,
            )


def _window(condition: str, since: float | None, until: float | None, column: str) -> tuple[str, tuple]:
    """``condition`` and ``column`` in [since, until), with its parameters."""
    params: tuple = ()
    if since is not None:
        condition += f" AND {column} >= ?"
        params += (float(since),)
    if until is not None:
        condition += f" AND {column} < ?"
        params += (float(until),)
    return condition, params
