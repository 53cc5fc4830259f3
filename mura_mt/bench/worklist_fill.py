"""Synthetic worklists for the tests and the worklist benchmark: studies in every group a reader sees (abnormal,
warning, in progress, normal, skipped, failed), some read, with made-up patients. ``fill`` goes through the store's
own calls (as a node would); ``fill_bulk`` writes thousands of rows in one transaction for the load benchmark."""

from __future__ import annotations

import json
import random

from mura_mt.dicom_node.store import Instance, WorklistStore, count_change

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
KINDS = ("abnormal", "warning", "normal", "normal", "in progress", "skipped", "failed")
WARNING = "The image looks unlike the images this model was trained on: the answer is not reliable."


def _answer(kind: str, rng: random.Random) -> dict:
    abnormal = kind == "abnormal" or (kind == "warning" and rng.random() < 0.5)
    prob = rng.uniform(0.55, 0.99) if abnormal else rng.uniform(0.01, 0.45)
    warnings = [WARNING] if kind == "warning" else []
    result = {"body_part": "wrist", "abnormal_prob": prob, "threshold": 0.5, "is_abnormal": abnormal}
    return {**result, "warnings": warnings, "result": {**result, "warnings": warnings}}


def fill(store: WorklistStore, n: int, start: float, seed: int = 0, prefix: str = "2.25.9") -> list[str]:
    """``n`` studies received a second apart from ``start``, through the store's calls; returns their UIDs."""
    rng = random.Random(seed)
    uids = []
    for number in range(n):
        kind, uid, at = KINDS[number % len(KINDS)], f"{prefix}.{number}", start + number
        store.add_instance(
            Instance(f"{uid}.1", uid, f"{uid}.0", CR_STORAGE, "CT" if kind == "skipped" else "CR", "WRIST", "", 0,
                     accession=f"ACC{number:05d}", patient_id=f"P{number:05d}", patient_name=f"Test^Patient{number}"),
            now=at,
        )  # fmt: skip
        if kind != "in progress":
            assert store.claim(uid, at, now=at + 1)
            if kind in ("skipped", "failed"):
                detail = "no projection radiograph (CR or DX); held: ['CT']" if kind == "skipped" else "unreadable"
                store.record_outcome(uid, at, kind, detail)
            else:
                store.record_answer(uid, at, _answer(kind, rng), [], [])
        uids.append(uid)
    return uids


def fill_bulk(store: WorklistStore, n: int, start: float, seed: int = 0) -> None:
    """``n`` studies in one transaction (the rows a node would have written), a tenth of them read."""
    rng = random.Random(seed)
    studies = []
    for number in range(n):
        kind = KINDS[number % len(KINDS)]
        answer = _answer(kind, rng) if kind in ("abnormal", "warning", "normal") else None
        status = {"in progress": "receiving", "skipped": "skipped", "failed": "failed"}.get(kind, "delivered")
        studies.append((
            f"2.25.8.{number}", f"ACC{number:06d}", f"P{number:06d}", f"Test^Patient{number}", start + number,
            start + number, 1, status, None if answer is None else "NODE", answer and answer["body_part"],
            answer and answer["abnormal_prob"], answer and int(answer["is_abnormal"]),
            json.dumps(answer["warnings"] if answer else []), answer and json.dumps(answer["result"]),
            "unreadable" if kind == "failed" else None, int(rng.random() < 0.1),
        ))  # fmt: skip
    with store.db.transaction() as tx:
        tx.executemany(
            "INSERT INTO studies (study_uid, accession, patient_id, patient_name, received, last_instance, views, "
            "status, node, body_part, abnormal_prob, is_abnormal, warnings, answer, detail, read) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            studies,
        )
        count_change(tx)
