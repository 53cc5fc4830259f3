"""A site fits its own: calibrate_site.py on labels that came back to the worklist refits calibration, thresholds and
operating points on some patients, compares old and new on the others as compare.py does, and writes a checkpoint
(weights unchanged) whose answers carry triage and whose model card says where its thresholds came from."""

import json

import numpy as np
import pandas as pd
import pytest

from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.inference.calibration import Calibration
from mura_mt.inference.checkpoint import checkpoint_config, load_checkpoint
from mura_mt.training.site_calibration import study_predictions, views_from_answers
from tests.conftest import REPO
from tests.test_worklist_store import view

DEMO = REPO / "checkpoints/demo"
SHIFT = 1.5  # the site's images push every logit up: the shipped threshold calls too many normals abnormal


def fill_labelled_site(store: WorklistStore, n: int, seed: int = 5) -> pd.DataFrame:
    """``n`` wrist studies of one to three views, answered as the demo checkpoint's calibration answers logits that
    run ``SHIFT`` high at this site, each labelled; two studies a patient. Returns the truth."""
    rng = np.random.default_rng(seed)
    calibration = Calibration.from_dict(checkpoint_config(DEMO)["calibration"])
    k = 6  # wrist
    labels = SiteLabels(store)
    rows = []
    for i in range(n):
        uid, label = f"1.2.826.0.77.{i}", int(rng.random() < 0.4)
        logits = rng.normal(1.5 if label else -1.5, 1.2, size=int(rng.integers(1, 4))) + SHIFT
        view_probs = 1 / (1 + np.exp(-(calibration.scale[k] * logits + calibration.bias[k])))
        prob = float(view_probs.mean())
        store.add_instance(view(uid, accession=f"S{i}", patient_id=f"P{i // 2}"), now=1000.0 + i)
        assert store.claim(uid, 1000.0 + i, now=5000.0)
        views = [{"abnormal_prob": float(p)} for p in view_probs]
        result = {"body_part": "wrist", "abnormal_prob": prob, "views": views}
        answer = {"body_part": "wrist", "abnormal_prob": prob, "is_abnormal": prob > calibration.threshold[k],
                  "warnings": [], "result": result}  # fmt: skip
        assert store.record_answer(uid, 1000.0 + i, answer, [], [])
        labels.record(label, ("reader", "ris")[i % 2], "site", study_uid=uid)
        rows.append((uid, f"P{i // 2}", label, prob))
    return pd.DataFrame(rows, columns=["study_id", "patient_id", "label", "prob"])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    store = WorklistStore(folder / "worklist.sqlite", node="NODEA")
    truth = fill_labelled_site(store, 400)
    from scripts.calibrate_site import main

    result = main(["--checkpoint", str(DEMO), "--db", str(folder / "worklist.sqlite"), "--out", str(folder / "new"),
                   "--sensitivity", "0.95", "--confidence", "0.9", "--ppv", "0.85"])  # fmt: skip
    return folder, store, truth, result


def test_the_stored_answers_give_back_the_views_logits_exactly(calibrated):
    _, store, truth, _ = calibrated
    old = Calibration.from_dict(checkpoint_config(DEMO)["calibration"])
    views = views_from_answers(SiteLabels(store).labelled_answers(), old)
    again = study_predictions(views, old).set_index("study_id")["prob"]
    assert again.loc[truth["study_id"]].to_numpy() == pytest.approx(truth["prob"].to_numpy(), abs=1e-9)


def test_the_new_checkpoint_keeps_the_weights_and_says_where_its_thresholds_came_from(calibrated):
    folder, _, truth, result = calibrated
    new, old = checkpoint_config(folder / "new"), checkpoint_config(DEMO)
    assert new["weights_sha256"] == old["weights_sha256"]
    load_checkpoint(folder / "new")  # the hash check passes: the weights are the demo's, byte for byte
    site = new["site_calibration"]
    assert site["n_studies_fit"] + site["n_studies_heldout"] == len(truth)
    assert 0.2 < site["n_studies_heldout"] / len(truth) < 0.4 and site["calibration_refitted_parts"] == ["wrist"]
    before, after = (folder / "new/site_calibration" / side / "study_predictions.csv" for side in ("before", "after"))
    held = pd.read_csv(before)
    fit_patients = set(truth["patient_id"]) - set(truth.set_index("study_id").loc[held["study_id"], "patient_id"])
    assert len(fit_patients) and not fit_patients & set(truth.set_index("study_id").loc[held["study_id"]]["patient_id"])
    assert new["calibration"]["wrist"] != old["calibration"]["wrist"]
    assert new["calibration"]["hand"] == old["calibration"]["hand"]  # no hand studies: the checkpoint's own stays
    wrist = new["operating_points"]["parts"]["wrist"]
    assert wrist["rule_out"] is not None and wrist["n_studies"] == site["n_studies_fit"]
    assert (wrist["sensitivity"], wrist["confidence"], wrist["ppv"]) == (0.95, 0.9, 0.85)
    card = (folder / "new/README.md").read_text()
    assert "Fitted at the site" in card and site["labels_sha256_fit"][:16] in card and "ORIGINAL calibration" in card
    # The shift made the old threshold call many normals abnormal; the refit on other patients repairs that.
    compared = json.loads((folder / "new/site_calibration/compare/compare.json").read_text())
    assert compared["overall"]["specificity"]["diff"] > 0.1
    assert site["heldout"]["after"]["overall"]["study_kappa"] > site["heldout"]["before"]["overall"]["study_kappa"]
    assert pd.read_csv(after)["study_id"].tolist() == held["study_id"].tolist()


def test_the_new_checkpoints_answers_carry_triage(calibrated, synthetic_root):
    from mura_mt.inference.predictor import Predictor

    folder, *_ = calibrated
    predictor = Predictor.from_pretrained(folder / "new")
    images = sorted((synthetic_root / "MURA-v1.1/valid/XR_WRIST").rglob("*.png"))[:3]
    answer = predictor.predict_study(images, body_part="wrist")
    points = checkpoint_config(folder / "new")["operating_points"]["parts"]["wrist"]
    expected = ("likely abnormal" if points["rule_in"] is not None and answer.abnormal_prob >= points["rule_in"]
                else "likely normal" if answer.abnormal_prob < points["rule_out"] else "uncertain")  # fmt: skip
    assert answer.triage == expected


def _evaluation_folder(folder, n: int, seed: int = 8):
    """An evaluate.py folder (image_logits.csv) of ``n`` studies spread over the seven parts, one view each, 40 %
    abnormal: no part holds the 149 abnormal studies a rule-out at 0.98 needs, all of them together do."""
    from mura_mt.labels import BODY_PARTS

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k, label = i % len(BODY_PARTS), int(rng.random() < 0.4)
        row = {"path": f"/site/{i}.png", "study_id": f"S{i}", "patient_id": f"P{i // 2}", "body_part": BODY_PARTS[k],
               "label": label}  # fmt: skip
        for j, part in enumerate(BODY_PARTS):
            row[f"part_logit_{part}"] = 6.0 if j == k else 0.0
            row[f"anomaly_logit_{part}"] = float(rng.normal(2.0 if label else -2.0, 1.0))
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "image_logits.csv", index=False)


def test_a_small_site_gets_likely_normal_by_the_site_wide_point_and_is_told_what_each_part_needs(tmp_path, capsys):
    """About 400 studies over seven parts: no part carries a rule-out of its own, the site-wide point does; the new
    checkpoint's answers are "likely normal" by it (and say so), and the summary says which part uses which point
    and how many more abnormal studies each part needs."""
    from mura_mt.inference.operating_points import OperatingPoints
    from scripts.calibrate_site import main

    _evaluation_folder(tmp_path / "eval", 420)
    result = main(["--checkpoint", str(DEMO), "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "new"),
                   "--split-off", "0"])  # fmt: skip
    printed = capsys.readouterr().out
    config = checkpoint_config(tmp_path / "new")["operating_points"]
    assert all(fitted["rule_out"] is None for fitted in config["parts"].values())
    assert config["site"]["rule_out"] is not None and config["site"]["n_abnormal"] >= 149
    points = OperatingPoints.from_config(config)
    low = config["site"]["rule_out"] / 2
    assert points.triage("humerus", low) == "likely normal" and points.basis("humerus", "likely normal") == "site-wide"
    assert "not for humerus studies alone" in points.meaning("humerus", "likely normal")
    wrist = result["operating_points"]["wrist"]
    assert f"{149 - wrist['n_abnormal']} more abnormal needed" in printed and "likely normal by: site-wide" in printed
    assert "site-wide" in printed and "needs 149 labelled abnormal studies" in printed


def test_bad_requests_are_named(tmp_path, capsys):
    from scripts.calibrate_site import main

    store = WorklistStore(tmp_path / "empty.sqlite")
    store.close()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(DEMO), "--db", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "x")])
    assert "no labelled studies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(DEMO), "--db", str(tmp_path / "empty.sqlite"), "--out", str(DEMO)])
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(DEMO), "--eval", str(tmp_path), "--out", str(tmp_path / "x")])
    assert "image_logits.csv is missing" in capsys.readouterr().err


def test_the_node_on_the_new_checkpoint_stores_and_sends_triage_and_files_likely_normal_after_normal(
    calibrated, synthetic_root, tmp_path
):
    """The node serves the new folder as it is: each answer's triage is in the store, in the worklist's order and in
    the SR the node sends."""
    import pydicom

    from mura_mt.data.synthetic_dicom import write_dicom_studies
    from mura_mt.dicom_node.outputs import ModelIdentity
    from mura_mt.dicom_node.sr import read_report
    from mura_mt.dicom_node.store import Instance
    from mura_mt.dicom_node.studies import StudyWorker
    from mura_mt.inference.operating_points import OperatingPoints, with_warnings
    from mura_mt.inference.predictor import Predictor

    folder, store, *_ = calibrated
    points = OperatingPoints.from_config(checkpoint_config(folder / "new")["operating_points"])
    worker = StudyWorker(store, Predictor.from_pretrained(folder / "new"), ModelIdentity.of(folder / "new", "MURAMT"),
                         tmp_path / "outbox", ["dimse"], 1.0)  # fmt: skip
    uids = []
    studies = [folder for split in ("train", "valid")
               for folder in write_dicom_studies(synthetic_root, tmp_path / split, split, seed=8)]  # fmt: skip
    for study in studies:
        if pydicom.dcmread(next(study.glob("*.dcm")), stop_before_pixels=True).BodyPartExamined != "WRIST":
            continue  # the site's labels were of wrists: only the wrist has operating points
        for path in sorted(study.glob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            instance = Instance(ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID, "CR",
                                ds.BodyPartExamined, str(path), path.stat().st_size)  # fmt: skip
            store.add_instance(instance, now=9000.0)
        uids.append(str(ds.StudyInstanceUID))
    assert sorted(worker.run_once(now=9010.0)) == sorted(uids)
    rows, _ = store.worklist(limit=1000)
    position = {row["study_uid"]: n for n, row in enumerate(rows)}
    for uid in uids:
        row = store.study(uid)
        expected = with_warnings(points.triage(row["body_part"], row["abnormal_prob"]), row["warnings"])
        assert row["triage"] == expected is not None
        sr = next(d["path"] for d in store.deliveries(uid) if read_report_or_none(d["path"]))
        assert read_report(sr)["triage"] == row["triage"]
        group = rows[position[uid]]["group"]
        quiet = not row["warnings"] and not row["is_abnormal"]
        assert (group == "likely normal") == (quiet and row["triage"] == "likely normal")
    normal = [n for n, row in enumerate(rows) if row["group"] == "normal"]
    likely = [n for n, row in enumerate(rows) if row["group"] == "likely normal"]
    assert likely and normal and max(normal) < min(likely)  # the new checkpoint's wrists fall in all three groups
    assert {store.study(uid)["triage"] for uid in uids} == {"likely normal", "uncertain", "likely abnormal"}


def read_report_or_none(path: str):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).Modality == "SR"
