"""A store that lives a year: scripts/store_admin.py takes a consistent backup while studies arrive, restores it into
a store the node opens, and checks a store's schema and integrity; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from mura_mt.dicom_node.store import SCHEMA_VERSION, WorklistStore
from tests.conftest import REPO
from tests.postgres import postgres
from tests.test_worklist_store import answered, view


def admin(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/store_admin.py", "--db", db, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "worklist.sqlite")
    else:
        with postgres() as url:
            yield url


def test_a_backup_taken_while_studies_arrive_restores_into_a_store_the_node_opens(target, tmp_path):
    store = WorklistStore(target, node="NODEA")
    for n in range(200):
        answered(store, f"1.2.{n}", 1000.0 + n, 0.3, False)
    stop, arrived = threading.Event(), []

    def arriving():  # a node receiving studies meanwhile: views, claims, answers
        n = 1000
        while not stop.is_set():
            uid = f"1.2.{n}"
            store.add_instance(view(uid, accession=f"A-{uid}"), now=5000.0 + n)
            if n % 2:
                answered(store, uid + ".9", 5000.0 + n, 0.8, True)
            arrived.append(uid)
            n += 1

    writer = threading.Thread(target=arriving)
    writer.start()
    try:
        done = admin(target, "backup", str(tmp_path / "backup.db"))
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    assert arrived, "nothing arrived during the backup"
    final = len(store._rows("SELECT study_uid FROM studies"))
    store.db.close()
    assert admin(target, "restore", str(tmp_path / "backup.db")).returncode == 0
    report = json.loads(admin(target, "check").stdout)
    assert report["ok"] and report["schema"] == SCHEMA_VERSION, report
    restored = WorklistStore(target, node="NODEA")  # what a node starting on it does first
    studies = restored._rows("SELECT study_uid, status FROM studies")
    assert 200 <= len(studies) <= final  # one committed state: everything before the backup, some of what came during
    views = restored._rows("SELECT study_uid FROM instances")
    assert {s["study_uid"] for s in studies} == {v["study_uid"] for v in views}  # no study without its views
    answered_before = {s["study_uid"] for s in studies if s["status"] == "analysed"}
    assert {f"1.2.{n}" for n in range(200)} <= answered_before
    restored.db.close()


def test_check_finds_what_is_wrong_and_bad_requests_are_named(tmp_path):
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    checked = admin(str(broken), "check")
    assert checked.returncode == 1 and json.loads(checked.stdout)["problems"], checked.stderr
    missing = admin(str(tmp_path / "nothing.sqlite"), "backup", str(tmp_path / "out.db"))
    assert missing.returncode == 2 and "no worklist store" in missing.stderr
    assert not (tmp_path / "out.db").exists() and not list(tmp_path.glob(".out.db*"))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 10)
    refused = admin(str(tmp_path / "w.sqlite"), "restore", str(garbage))
    assert refused.returncode == 2 and "fails SQLite's integrity check: not restored" in refused.stderr
    assert not (tmp_path / "w.sqlite").exists()
