"""Several nodes, one list: two node processes (two AE titles) on one REAL PostgreSQL, fed by a REAL Orthanc. Studies
routed to one node, to the other, and to both at once are each analysed exactly once (one SR in the PACS), by a node
that holds every view, and nothing is lost."""

import io
import threading

import pydicom
import pytest

from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.dicom_node.store import WorklistStore
from tests.conftest import free_port
from tests.node_process import start_node, stop_node
from tests.orthanc import instance_file, orthanc, route, study_series, upload, wait_for
from tests.postgres import postgres

pytestmark = pytest.mark.slow
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


def _made(url: str, study_uid: str) -> dict[str, int]:
    """How many SCs and SRs of the node's Orthanc holds for a study."""
    counts = {"sc": 0, "sr": 0}
    for series in study_series(url, study_uid):
        for orthanc_id in series["Instances"]:
            ds = pydicom.dcmread(io.BytesIO(instance_file(url, orthanc_id)), stop_before_pixels=True)
            counts["sc"] += ds.SOPClassUID == SC_CLASS
            counts["sr"] += ds.SOPClassUID == SR_CLASS
    return counts


def test_two_nodes_on_one_postgresql_analyse_every_study_once(synthetic_root, tmp_path):
    folders = write_dicom_studies(synthetic_root, tmp_path / "studies", "valid", "explicit", seed=21, limit=9)
    views = {pydicom.dcmread(next(f.glob("*.dcm"))).StudyInstanceUID: len(list(f.glob("*.dcm"))) for f in folders}
    uids = list(views)
    port_a, port_b, orthanc_port = free_port(), free_port(), free_port()
    modalities = {"a": ["NODEA", "127.0.0.1", port_a], "b": ["NODEB", "127.0.0.1", port_b]}
    with postgres() as db, orthanc(tmp_path / "orthanc", modalities, dicom_port=orthanc_port) as (url, _):
        return_to = f"ORTHANC@127.0.0.1:{orthanc_port}"
        nodes = []
        try:
            for name, port in (("NODEA", port_a), ("NODEB", port_b)):
                (tmp_path / name).mkdir()
                nodes.append(start_node(tmp_path / name, port, return_to, 1.0, "node.log", ae_title=name, db=db))
            ids = [upload(url, sorted(folder.glob("*.dcm"))) for folder in folders]
            only_a, only_b, both = ids[0:3], ids[3:6], ids[6:9]
            assert route(url, "a", sum(only_a, [])).status_code == 200
            assert route(url, "b", sum(only_b, [])).status_code == 200
            # The same studies to both nodes at once: their instances interleave at the two nodes.
            answers = []
            senders = [
                threading.Thread(target=lambda m=m: answers.append(route(url, m, sum(both, [])).status_code))
                for m in ("a", "b")
            ]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            assert answers == [200, 200]

            store = WorklistStore(db, node="reader")
            wait_for(
                lambda: all((s := store.study(uid)) and s["status"] == "delivered" for uid in uids),
                180,
                "every study delivered",
            )
            for number, uid in enumerate(uids):
                study = store.study(uid)
                assert study["views"] == views[uid]  # nothing lost, nothing counted twice
                assert study["node"] == ("NODEA" if number < 3 else "NODEB" if number < 6 else study["node"])
                assert {d["node"] for d in store.deliveries(uid)} == {study["node"]}
                # Analysed once: one SR and one SC per view in the PACS (a second analysis would add new objects).
                assert _made(url, uid) == {"sc": views[uid], "sr": 1}
            for number in range(6, 9):  # both nodes hold every view of the studies sent to both
                assert {c["node"] for c in store.copies(uids[number])} == {"NODEA", "NODEB"}
            worklist, total = store.worklist()
            assert total == 9 and {row["study_uid"] for row in worklist} == set(uids)
        finally:
            for node in nodes:
                stop_node(node)
