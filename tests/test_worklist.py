"""The worklist's rows for people and programs (no server): escaping of what comes from DICOM headers, the API's
values and its refusals."""

import pytest

from mura_mt.bench.worklist_fill import fill
from mura_mt.dicom_node.store import Instance, WorklistStore
from mura_mt.site.window import parse_since
from mura_mt.web.worklist import API_KEYS, api_rows, table_html


def test_names_from_dicom_headers_are_escaped_in_the_page(tmp_path):
    store = WorklistStore(tmp_path / "w.sqlite")
    hostile = "<img src=x onerror=alert(1)>"
    store.add_instance(Instance("1.1", "1", "1.0", "1.2.840.10008.5.1.4.1.1.1", "CR", "WRIST", "", 0,
                                accession=hostile, patient_id='"><script>', patient_name=hostile))  # fmt: skip
    page = table_html(store.worklist()[0], selected="1")
    assert "<img" not in page and "<script>" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'class="g-in-progress selected"' in page


def test_api_rows_have_plain_json_values_in_worklist_order(tmp_path):
    store = WorklistStore(tmp_path / "w.sqlite", node="ELSEWHERE")
    fill(store, 14, 1_700_000_000.0)
    rows = api_rows(store)
    assert [r["study_uid"] for r in rows] == [r["study_uid"] for r in store.worklist()[0]]
    assert all(tuple(r) == API_KEYS for r in rows)
    assert rows[0]["received"].endswith("Z") and isinstance(rows[0]["is_abnormal"], bool)
    pending = [r for r in rows if r["status"] == "receiving"]
    assert pending and all(r["abnormal_prob"] is None and r["is_abnormal"] is None for r in pending)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and skipped[0]["warnings"][0].startswith("skipped: no projection radiograph")


@pytest.mark.parametrize(
    ("since", "expected"),
    [("", None), (None, None), ("1700000000", 1_700_000_000.0), ("2023-11-14T22:13:20Z", 1_700_000_000.0),
     ("2023-11-14T23:13:20+01:00", 1_700_000_000.0), ("2023-11-14T22:13:20", 1_700_000_000.0)],
)  # fmt: skip
def test_since_takes_unix_seconds_or_iso_times(since, expected):
    assert parse_since(since) == expected


def test_api_rows_say_whose_guarantee_stands_behind_the_triage(tmp_path):
    store = WorklistStore(tmp_path / "w.sqlite")
    for uid, basis in (("1", "wrist"), ("2", "site-wide"), ("3", None)):
        store.add_instance(Instance(f"{uid}.1", uid, f"{uid}.0", "1.2.840.10008.5.1.4.1.1.1", "CR", "WRIST", "", 0),
                           now=10)  # fmt: skip
        assert store.claim(uid, 10, now=30)
        triage = "likely normal" if basis else None
        answer = {"body_part": "wrist", "abnormal_prob": 0.01, "is_abnormal": False, "warnings": [], "triage": triage,
                  "result": {"triage": triage, "triage_basis": basis}}  # fmt: skip
        assert store.record_answer(uid, 10, answer, [], [])
    assert {r["study_uid"]: r["triage_basis"] for r in api_rows(store)} == {"1": "wrist", "2": "site-wide", "3": None}


def test_bad_api_input_is_refused_with_what_is_accepted(tmp_path):
    store = WorklistStore(tmp_path / "w.sqlite")
    refusals = (
        ({"status": "urgent"}, "status must be one of receiving"),
        ({"since": "last week"}, "since must be an ISO 8601 time"),
        ({"limit": 0}, "limit must be 1 to 1000"),
        ({"offset": -1}, "offset must be 0 or more"),
    )
    for kwargs, message in refusals:
        with pytest.raises(ValueError, match=message):
            api_rows(store, **kwargs)


def test_a_study_whose_files_are_elsewhere_says_which_node_holds_them(tmp_path):
    from mura_mt.web.worklist import StudyViews

    store = WorklistStore(tmp_path / "w.sqlite", node="NODEB")
    store.add_instance(Instance("1.1", "1", "1.0", "1.2.840.10008.5.1.4.1.1.1", "CR", "WRIST",
                                "/srv/nodeb/received/1.1.dcm", 10))  # fmt: skip
    pictures, note = StudyViews(store, predictor=None).pictures(store.study("1"))  # nothing to analyse here
    assert pictures == [] and note == "1 view(s) cannot be shown here: their files are on NODEB."
