"""A year at a busy site, written fast: ``fill_year`` puts ``n`` answered studies (spread over the year before ``end``),
their views, this node's copies, the delivered answers and the labels of a share of them into a worklist store, in
chunks, through the store's own tables and its change counter (``store.count_change``), as the node and the RIS would
have left them. For the site benchmark and the tests of what a year costs."""

from __future__ import annotations

import json
import random

from mura_mt.dicom_node.store import WorklistStore, count_change
from mura_mt.labels import BODY_PARTS

YEAR_S = 365 * 86400
CHUNK = 20_000
VIEWS = 2  # MURA studies have 2.6 views on average; the node answers each with an SC, plus one SR


def fill_year(store: WorklistStore, n: int, end: float, labelled: float = 0.3, prevalence: float = 0.35,
              seed: int = 0, prefix: str = "2.25.7") -> dict:  # fmt: skip
    """Returns the counts written. Studies are abnormal with ``prevalence``; the model's probability is drawn from
    a Beta per class (AUROC about 0.9) and its verdict is the 0.5 threshold; ``labelled`` of the studies get a RIS
    label. Every study is delivered; 3 % carry the "unlike the training images" warning."""
    rng = random.Random(seed)
    written = {"studies": 0, "instances": 0, "deliveries": 0, "labels": 0}
    for first in range(0, n, CHUNK):
        studies, instances, copies, deliveries, labels = [], [], [], [], []
        for number in range(first, min(n, first + CHUNK)):
            uid = f"{prefix}.{number}"
            at = end - YEAR_S + YEAR_S * (number + 0.5) / n
            truth = rng.random() < prevalence
            prob = rng.betavariate(5, 2) if truth else rng.betavariate(2, 5)
            part = BODY_PARTS[number % len(BODY_PARTS)]
            warned = rng.random() < 0.03
            answer = {"body_part": part, "abnormal_prob": prob, "threshold": 0.5, "is_abnormal": prob >= 0.5,
                      "warnings": ["unlike the training images"] if warned else []}  # fmt: skip
            studies.append((uid, f"ACC{number:07d}", f"P{number % (n // 3 + 1):07d}", f"Test^Patient{number}", at,
                            at + 30, VIEWS, "delivered", "NODE", part, prob, int(prob >= 0.5),
                            json.dumps(answer["warnings"]), json.dumps(answer), "delivered"))  # fmt: skip
            for view in range(VIEWS):
                sop = f"{uid}.1.{view}"
                instances.append((sop, uid, f"{uid}.1", "1.2.840.10008.5.1.4.1.1.1", "CR", part.upper(), at))
                copies.append((sop, "NODE", "", 7_000_000))  # the pixels deleted by --retain-hours
            for made in range(VIEWS + 1):
                deliveries.append((uid, "NODE", f"{uid}.9.{made}", "", "dimse", "delivered", 1, at + 40))
            if rng.random() < labelled:
                label = int(truth) if rng.random() < 0.97 else int(not truth)  # the report's occasional miss
                labels.append((uid, f"ACC{number:07d}", label, "ris", "RIS", at + 86400, f"M{number}"))
        with store.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO studies (study_uid, accession, patient_id, patient_name, received, last_instance, views, "
                "status, node, body_part, abnormal_prob, is_abnormal, warnings, answer, delivery) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                studies,
            )
            tx.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?)", instances)
            tx.executemany("INSERT INTO copies VALUES (?, ?, ?, ?)", copies)
            tx.executemany(
                "INSERT INTO deliveries (study_uid, node, sop_uid, path, destination, state, attempts, next_try) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                deliveries,
            )
            tx.executemany(
                "INSERT INTO labels (study_uid, accession, label, source, author, recorded, message_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                labels,
            )
            count_change(tx)
        written["studies"] += len(studies)
        written["instances"] += len(instances)
        written["deliveries"] += len(deliveries)
        written["labels"] += len(labels)
    return written
