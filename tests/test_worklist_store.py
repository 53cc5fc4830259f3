"""The worklist store behaves the same on SQLite and on a REAL PostgreSQL server: receiving, claims between nodes,
answers, the worklist order, paging and filters, read marks, and change detection."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest

from mura_mt.dicom_node.database import StoreUnavailable
from mura_mt.dicom_node.store import CLAIM_LEASE_S, SCHEMA_VERSION, Instance, SchemaMismatch, WorklistStore
from tests.postgres import postgres


@pytest.fixture(scope="module")
def postgres_server():
    with postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """A fresh, empty worklist database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "worklist.sqlite")
    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


_sops = itertools.count(1)


def view(study: str, modality: str = "CR", path: str = "/node/file.dcm", sop: str | None = None, **patient) -> Instance:
    sop = sop or f"1.2.3.{next(_sops)}"
    return Instance(sop, study, f"{study}.1", "1.2.840.10008.5.1.4.1.1.1", modality, "WRIST", path, 100, **patient)


ANSWER = {"body_part": "wrist", "abnormal_prob": 0.5, "is_abnormal": False, "warnings": []}


def answered(store: WorklistStore, study: str, at: float, prob: float, abnormal: bool, warnings=(),
             triage=None) -> None:  # fmt: skip
    """A study received at ``at`` and answered."""
    store.add_instance(view(study, accession=f"A-{study}", patient_id="P", patient_name="Doe^Jane"), now=at)
    assert store.claim(study, at, now=at + 20)
    answer = {**ANSWER, "abnormal_prob": prob, "is_abnormal": abnormal, "warnings": list(warnings), "triage": triage}
    assert store.record_answer(study, at, answer, [("9.9", "/out/sc.dcm")], ["dimse"])


def test_an_instance_is_recorded_once_and_each_node_keeps_its_own_copy(target):
    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    first = view("1", patient_id="P1", patient_name="Doe^Jane", accession="ACC1")
    assert a.add_instance(first, now=10)
    assert not a.add_instance(first, now=11)  # sent again: nothing changes
    assert not b.add_instance(first, now=12)  # the same view at another node: a copy, not a new view
    assert a.study("1")["views"] == 1 and a.study("1")["last_instance"] == 10
    assert a.instances_known([first.sop_uid, "nope"]) == {first.sop_uid} == b.instances_known([first.sop_uid])
    assert sorted(c["node"] for c in a.copies("1")) == ["A", "B"]
    assert a.stored_bytes() == b.stored_bytes() == 100
    assert a.study("1")["patient_name"] == "Doe^Jane" and a.study("1")["accession"] == "ACC1"


def test_a_study_sent_to_two_nodes_is_claimed_by_one(target):
    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    for store in (a, b):
        store.add_instance(view("1", sop="1.1"), now=10)
    assert [s["study_uid"] for s in a.quiet_studies(100, now=100)] == ["1"]
    assert a.claim("1", 10, now=100)
    assert b.quiet_studies(100, now=100) == []  # A is analysing it
    assert not b.claim("1", 10, now=100)
    assert not b.record_answer("1", 10, ANSWER, [], ["dimse"])  # a node without the claim cannot answer it
    assert a.record_answer("1", 10, ANSWER, [("9.9", "/out/sc.dcm")], ["dimse"])
    assert a.study("1")["node"] == "A" and a.study("1")["status"] == "analysed"
    assert len(a.due_deliveries()) == 1 and b.due_deliveries() == []  # the node that answered sends


def test_only_a_node_holding_every_view_claims(target):
    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    a.add_instance(view("1", sop="1.1"), now=10)
    b.add_instance(view("1", sop="1.1"), now=10)
    b.add_instance(view("1", sop="1.2"), now=11)  # only B received the second view
    assert a.quiet_studies(100, now=100) == []
    assert [s["study_uid"] for s in b.quiet_studies(100, now=100)] == ["1"]


def test_a_study_no_single_node_holds_is_found_as_split(target):
    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    a.add_instance(view("split", sop="s.1"), now=10)
    b.add_instance(view("split", sop="s.2"), now=11)
    a.add_instance(view("whole", sop="w.1"), now=10)
    b.add_instance(view("whole", sop="w.1"), now=10)
    b.add_instance(view("whole", sop="w.2"), now=11)  # B holds both views: it can answer
    assert [(s["study_uid"], s["held"]) for s in a.split_studies(100)] == [("split", {"A": 1, "B": 1})]
    assert a.split_studies(5) == []  # not quiet long enough yet


def test_a_dead_nodes_claim_is_taken_over_after_the_lease(target):
    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    for store in (a, b):
        store.add_instance(view("1", sop="1.1"), now=10)
    assert a.claim("1", 10, now=100)
    assert not b.claim("1", 10, now=100 + CLAIM_LEASE_S - 1)
    assert [s["study_uid"] for s in a.quiet_studies(200, now=200)] == ["1"]  # A restarted: its own claim is open
    assert b.claim("1", 10, now=101 + CLAIM_LEASE_S)
    assert not a.record_answer("1", 10, ANSWER, [], ["dimse"])  # A's late answer is refused
    assert b.record_answer("1", 10, ANSWER, [], ["dimse"])


def test_a_new_view_during_the_analysis_discards_the_answer(target):
    store = WorklistStore(target, node="A")
    store.add_instance(view("1"), now=10)
    assert store.claim("1", 10, now=100)
    store.add_instance(view("1"), now=101)
    assert not store.record_answer("1", 10, ANSWER, [], ["dimse"])
    assert store.study("1")["status"] == "receiving" and store.study("1")["views"] == 2


def test_racing_claims_from_four_nodes_never_analyse_a_study_twice(target):
    nodes = [WorklistStore(target, node=name) for name in "ABCD"]  # one study worker each, as a node runs
    studies = [f"s{i}" for i in range(40)]
    for uid in studies:
        for node in nodes:
            node.add_instance(view(uid, sop=f"{uid}.1"), now=10)
    won = {node.node: [] for node in nodes}

    def work(node: WorklistStore) -> None:
        for study in node.quiet_studies(100, now=100):
            if node.claim(study["study_uid"], study["last_instance"], now=100):
                won[node.node].append(study["study_uid"])

    threads = [threading.Thread(target=work, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sum(won.values(), [])) == sorted(studies)  # every study claimed, none twice


def test_the_worklist_order_groups_read_marks_and_paging(target):
    store = WorklistStore(target, node="A")
    answered(store, "abn-low", at=10, prob=0.7, abnormal=True)
    answered(store, "abn-high", at=11, prob=0.95, abnormal=True)
    answered(store, "warn-old", at=12, prob=0.9, abnormal=True, warnings=["looks unlike the training images"])
    answered(store, "warn-new", at=13, prob=0.1, abnormal=False, warnings=["uncertain body part"])
    answered(store, "normal-old", at=14, prob=0.1, abnormal=False)
    answered(store, "normal-new", at=15, prob=0.2, abnormal=False, triage="uncertain")
    # "likely normal" reads after every other normal, however new; with a warning it stays among the warnings
    answered(store, "likely-normal", at=19, prob=0.01, abnormal=False, triage="likely normal")
    answered(store, "warn-likely", at=9, prob=0.01, abnormal=False, warnings=["uncertain body part"],
             triage="likely normal")  # fmt: skip
    store.add_instance(view("arriving"), now=16)
    store.add_instance(view("ct", modality="CT"), now=17)
    assert store.claim("ct", 17, now=40)
    assert store.record_outcome("ct", 17, "skipped", "no projection radiograph")
    store.add_instance(view("broken"), now=18)
    assert store.claim("broken", 18, now=40)
    assert store.record_outcome("broken", 18, "failed", "a view could not be read")
    order = ["abn-high", "abn-low", "warn-new", "warn-old", "warn-likely", "arriving", "normal-new", "normal-old",
             "likely-normal", "broken", "ct"]  # fmt: skip
    rows, total = store.worklist()
    assert [r["study_uid"] for r in rows] == order and total == 11
    assert [r["group"] for r in rows[:6]] == ["abnormal", "abnormal", "warning", "warning", "warning", "in progress"]
    assert [r["group"] for r in rows[6:]] == ["normal", "normal", "likely normal", "not analysed", "not analysed"]
    assert rows[8]["triage"] == "likely normal" and rows[6]["triage"] == "uncertain"
    assert rows[2]["warnings"] == ["uncertain body part"] and rows[0]["patient_name"] == "Doe^Jane"

    assert store.set_read("abn-high") and not store.set_read("no-such-study")
    rows, _ = store.worklist()
    assert [r["study_uid"] for r in rows] == [*order[1:], "abn-high"]  # read studies sink to the bottom
    assert store.set_read("abn-high", False)

    page, total = store.worklist(limit=3, offset=3)
    assert [r["study_uid"] for r in page] == order[3:6] and total == 11
    assert [r["study_uid"] for r in store.worklist(status="failed")[0]] == ["broken"]
    since = ["arriving", "normal-new", "likely-normal", "broken", "ct"]
    assert [r["study_uid"] for r in store.worklist(since=15)[0]] == since
    with pytest.raises(ValueError, match="status must be one of"):
        store.worklist(status="urgent")


def test_the_version_moves_with_every_change_a_reader_sees(target):
    store = WorklistStore(target, node="A")
    seen = [store.version()]
    store.add_instance(view("1"), now=10)
    seen.append(store.version())
    assert store.claim("1", 10, now=100)
    seen.append(store.version())
    assert store.record_answer("1", 10, ANSWER, [("9.9", "/out/sc.dcm")], ["dimse"])
    seen.append(store.version())
    store.mark_delivered(store.due_deliveries()[0]["id"])
    seen.append(store.version())
    store.set_read("1")
    seen.append(store.version())
    assert len(set(seen)) == len(seen)
    assert store.version() == seen[-1]  # and stays put when nothing changes


def test_a_store_of_another_schema_is_refused_with_what_to_do(target):
    WorklistStore(target, node="A")
    with WorklistStore(target).db.transaction() as tx:
        tx.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with pytest.raises(SchemaMismatch, match="schema 1.*new store"):
        WorklistStore(target, node="A")


def _legacy_schema(version: str) -> str:
    """The schema an earlier mura-mt wrote: 3 ordered the worklist by an index over expressions, 2 had no triage."""
    import re

    from mura_mt.dicom_node.store import SCHEMA, WORKLIST_GROUP, WORKLIST_KEY

    old = re.sub(
        r"    rev INTEGER NOT NULL DEFAULT 0,.*?\n\);",
        "    rev INTEGER NOT NULL DEFAULT 0\n);",
        SCHEMA,
        flags=re.DOTALL,
    )
    old = old.replace(
        "studies_reading_order ON studies(read, worklist_group, worklist_key, study_uid)",
        f"studies_worklist_order ON studies(read, ({WORKLIST_GROUP}), ({WORKLIST_KEY}), study_uid)",
    )
    assert "worklist_group" not in old and "GENERATED" not in old
    if version == "2":
        old = old.replace("    triage TEXT,                               -- \"likely normal\", \"uncertain\", "
                          "\"likely abnormal\" or NULL\n", "")  # fmt: skip
        old = old.replace("WHEN triage = 'likely normal' THEN 4 ELSE 3 END", "ELSE 3 END")
        assert "triage" not in old
    return old


@pytest.mark.parametrize("version", ["2", "3"])
def test_an_older_store_is_upgraded_in_place_and_keeps_its_studies(target, version):
    """A node updated to triage (2) and to the covering reading order (3) opens the store its last version wrote."""
    from mura_mt.dicom_node.database import Database

    legacy = Database(target)
    legacy.create(_legacy_schema(version))
    with legacy.transaction() as tx:
        tx.execute("INSERT INTO meta VALUES ('schema', ?)", (version,))
        tx.execute("INSERT INTO studies (study_uid, received, last_instance) VALUES ('kept', 1, 1)")
    legacy.close()
    store = WorklistStore(target, node="A")
    answered(store, "new", at=5, prob=0.01, abnormal=False, triage="likely normal")
    answered(store, "urgent", at=6, prob=0.9, abnormal=True)
    rows, total = store.worklist()
    assert total == 3 and [r["study_uid"] for r in rows] == ["urgent", "kept", "new"]
    assert {r["study_uid"]: r["triage"] for r in rows}["new"] == "likely normal"
    assert [r["group"] for r in rows] == ["abnormal", "in progress", "likely normal"]
    WorklistStore(target, node="B")  # opened again: nothing left to upgrade
    with store.db.transaction() as tx:
        assert tx.value("SELECT value FROM meta WHERE key = 'schema'") == SCHEMA_VERSION


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password():
    from mura_mt.bench.orthanc import free_port

    url = f"postgresql://mura:s3cret@127.0.0.1:{free_port()}/mura"
    with pytest.raises(StoreUnavailable, match=r"cannot reach the worklist database postgresql://mura:\*\*\*@") as err:
        WorklistStore(url)
    assert "s3cret" not in str(err.value)


def test_the_worker_fails_a_split_study_and_says_why(target, tmp_path):
    from mura_mt.dicom_node.studies import StudyWorker

    a, b = WorklistStore(target, node="A"), WorklistStore(target, node="B")
    a.add_instance(view("split", sop="s.1"), now=10)
    b.add_instance(view("split", sop="s.2"), now=11)
    worker = StudyWorker(a, None, None, tmp_path / "outbox", [], quiet_seconds=1)  # no model needed: nothing to answer
    assert worker.run_once(now=11 + 30) == [] and a.study("split")["status"] == "receiving"  # the rest may come
    assert worker.run_once(now=11 + 61) == ["split"]
    study = b.study("split")
    assert study["status"] == "failed" and "split between nodes (A 1, B 1)" in study["detail"]


def test_a_postgresql_connection_the_server_dropped_is_opened_again(postgres_server, tmp_path):
    """A database restart or a failover drops every connection: the next transaction opens a new one."""
    import psycopg

    store = WorklistStore(postgres_server, node="A")
    store.add_instance(view("1"), now=10)
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert dropped >= 1
    store.add_instance(view("1"), now=11)  # no error: reconnected at BEGIN
    assert store.study("1")["views"] == 2


def test_while_postgresql_is_down_the_node_refuses_for_now_and_takes_the_study_afterwards(synthetic_root, tmp_path):
    """A node's C-STORE while its database is down: "out of resources" (0xA700, the sender tries again later), and
    the same instance stored once the database is back. The store's error names the database."""
    import pydicom
    from pynetdicom import AE

    from mura_mt.bench.orthanc import free_port
    from mura_mt.data.synthetic_dicom import write_dicom_studies
    from mura_mt.dicom_node.receive import NodeSettings, StorageNode

    folder = write_dicom_studies(synthetic_root, tmp_path / "dicom", "valid", "explicit", seed=5, limit=1)[0]
    dataset = pydicom.dcmread(next(folder.glob("*.dcm")))
    with postgres() as server:
        store = WorklistStore(server, node="NODEA")
        port = free_port()
        node = StorageNode(NodeSettings("NODEA", port), store, tmp_path / "received")
        node.start()

        def send() -> int:
            ae = AE(ae_title="ORTHANC")
            ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
            association = ae.associate("127.0.0.1", port, ae_title="NODEA")
            try:
                return int(association.send_c_store(dataset).Status)
            finally:
                association.release()

        try:
            server.stop()
            assert send() == 0xA700
            with pytest.raises(StoreUnavailable, match=r"worklist database postgresql://mura@127\.0\.0\.1:\d+/mura"):
                store.study(str(dataset.StudyInstanceUID))
            server.start()
            assert send() == 0x0000
            assert store.study(str(dataset.StudyInstanceUID))["views"] == 1
        finally:
            node.stop()


def test_labels_supersede_keep_their_history_and_wait_for_their_study(target):
    from mura_mt.site.labels import LabelError, SiteLabels

    store = WorklistStore(target, node="NODEA")
    labels = SiteLabels(store)
    answered(store, "s1", 1.0, 0.9, True)
    before = store.version()
    assert labels.record("abnormal", "reader", "ana", study_uid="s1", now=10.0).outcome == "recorded"
    assert store.version() != before  # the open worklist page refreshes
    ris = labels.record("normal", "ris", "RIS", accession="A-s1", message_id="m1", now=20.0)
    assert (ris.outcome, ris.study_uid) == ("recorded", "s1")
    assert labels.record("normal", "ris", "RIS", accession="A-s1", message_id="m1", now=30.0).outcome == "duplicate"
    history = labels.history("s1")
    assert [(h["source"], h["label"], h["superseded"]) for h in history] == [("reader", 1, 1), ("ris", 0, 0)]
    assert labels.current("s1")["author"] == "RIS"
    # a report before its study: kept, then attached when the study arrives
    assert labels.record("1", "ris", "RIS", accession="A-s2", message_id="m2", keep_waiting=True).outcome == "waiting"
    store.add_instance(view("s2", accession="A-s2"), now=40.0)
    assert labels.current("s2")["label"] == 1 and labels.current("s2")["source"] == "ris"
    for bad, message in ((("maybe", "reader", "ana"), "abnormal, normal"), (("1", "fax", "ana"), "source must be")):
        with pytest.raises(LabelError, match=message):
            labels.record(*bad, study_uid="s1")
    with pytest.raises(LabelError, match="body_part must be"):
        labels.record("1", "reader", "ana", study_uid="s1", body_part="knee")
    with pytest.raises(LabelError, match="no study"):
        labels.record("1", "reader", "ana", study_uid="nope")
    assert len(labels.history("s1")) == 2  # refusals change nothing
    pairs = [(row["study_uid"], row["label"], row["label_source"]) for row in labels.labelled_answers()]
    assert pairs == [("s1", 0, "ris")]  # s2 is labelled but not answered yet
    assert labels.labelled_answers(source="reader") == [] and labels.labelled_answers(since=2.0) == []
