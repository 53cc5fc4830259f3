"""Fine-tuning on the site's own data, the README's recipe end to end on synthetic DICOM studies the node received:
export_site_data.py (PNG pixels and keyed hashes only) -> accelerate launch train.py model.init_from=demo ->
evaluate.py -> calibrate_site.py --eval -> compare.py against the demo on patients no step fitted on."""

import json
import re
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import torch

from mura_mt.config import load_config
from mura_mt.data.synthetic_dicom import write_dicom_studies
from mura_mt.site.labels import SiteLabels
from mura_mt.dicom_node.store import Instance, WorklistStore
from mura_mt.inference.checkpoint import checkpoint_config, load_checkpoint
from tests.conftest import REPO
from tests.test_distributed import _launch

DEMO = REPO / "checkpoints/demo"


def received_and_labelled(synthetic_root: Path, folder: Path) -> tuple[Path, list[pydicom.Dataset]]:
    """The synthetic train split as DICOM studies a node received and answered, each with the RIS's label."""
    folders = write_dicom_studies(synthetic_root, folder / "dicom", "train", seed=9)
    facts = pd.read_csv(folder / "dicom/studies.csv", dtype=str)
    store = WorklistStore(folder / "worklist.sqlite", node="NODEA")
    headers = []
    for n, (fact, study) in enumerate(zip(facts.itertuples(), folders)):
        for file in sorted(study.glob("*.dcm")):
            ds = pydicom.dcmread(file, stop_before_pixels=True)
            headers.append(ds)
            store.add_instance(Instance(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                        str(ds.SOPClassUID), str(ds.Modality), str(ds.BodyPartExamined), str(file),
                                        file.stat().st_size, str(ds.AccessionNumber), str(ds.PatientID),
                                        str(ds.PatientName)), now=1000.0 + n)  # fmt: skip
        assert store.claim(fact.study_uid, 1000.0 + n, now=9000.0)
        answer = {"body_part": fact.body_part, "abnormal_prob": 0.5, "is_abnormal": False, "warnings": [],
                  "result": {"views": []}}  # fmt: skip
        assert store.record_answer(fact.study_uid, 1000.0 + n, answer, [], [])
        SiteLabels(store).record(int(fact.label), "ris", "RIS", study_uid=fact.study_uid)
    store.close()
    return folder / "worklist.sqlite", headers


def png_chunks(path: Path) -> set[str]:
    data = path.read_bytes()
    chunks, at = set(), 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        chunks.add(kind.decode())
        at += 12 + length
    return chunks


@pytest.mark.slow
def test_export_fine_tune_calibrate_and_compare_on_the_sites_held_out_patients(tmp_path, capsys):
    from scripts.calibrate_site import main as calibrate
    from scripts.compare import main as compare
    from scripts.evaluate import main as evaluate
    from scripts.export_site_data import main as export

    from mura_mt.data.synthetic import make_synthetic_mura

    make_synthetic_mura(tmp_path / "mura", studies_per_part=10, valid_studies_per_part=1, seed=4)
    db, headers = received_and_labelled(tmp_path / "mura", tmp_path)
    site = tmp_path / "site"
    summary = export(["--db", str(db), "--out", str(site), "--split-off", "0.4", "--key-file", str(tmp_path / "key")])
    printed = capsys.readouterr().out
    assert "burned into the images" in printed and "NOT removed" in printed
    assert summary["studies"] == 70 and summary["test_studies"] > 0 and summary["skipped"] == []

    # Nothing of the headers left the site: no name, id, accession, UID or date in any file, PNGs without metadata.
    train, test = pd.read_csv(site / "train.csv", dtype=str), pd.read_csv(site / "test.csv", dtype=str)
    assert list(train.columns) == ["path", "body_part", "label", "study_id", "patient_id", "accession"]
    assert not set(train["patient_id"]) & set(test["patient_id"])
    text = "\n".join(p.read_text() for p in site.glob("*.csv")) + "\n".join(str(p) for p in site.rglob("*"))
    secrets = {str(v) for ds in headers for v in (ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID,
                                                  ds.SOPInstanceUID, ds.StudyDate, ds.PatientBirthDate)}  # fmt: skip
    secrets |= {part for ds in headers for part in str(ds.PatientName).split("^") if len(part) > 2}
    assert not [s for s in secrets if s in text]
    pngs = list(site.rglob("*.png"))
    assert len(pngs) == summary["images"] and all(png_chunks(p) <= {"IHDR", "IDAT", "IEND"} for p in pngs)
    assert not [p for p in site.rglob("*") if p.is_file() and p.suffix not in (".png", ".csv")]
    again = export(["--db", str(db), "--out", str(tmp_path / "again"), "--key-file", str(tmp_path / "key")])
    assert again["studies"] == 70  # the same key gives the same ids
    assert set(pd.read_csv(tmp_path / "again/train.csv", dtype=str)["study_id"]) == set(train["study_id"]) | set(
        test["study_id"]
    )

    # Fine-tune from the demo checkpoint (backbone and heads) with accelerate launch, as the README says.
    run = tmp_path / "run"
    command, env = _launch([str(REPO / "scripts/train.py"), "--config", str(REPO / "configs/smoke.yaml"),
                            "data.kind=csv", f"data.root={site / 'train.csv'}", f"data.test_csv={site / 'test.csv'}",
                            f"model.init_from={DEMO}", f"output_dir={run}", "train.epochs=1"])  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_config(run / "config.yaml").model.init_from == str(DEMO)
    tuned, _ = load_checkpoint(run / "best")
    demo, _ = load_checkpoint(DEMO)
    fresh = type(demo)("resnet18", pretrained=False)
    # One epoch moved the weights, but from the demo's: nearly parallel to them, unlike a fresh network's.
    flat = lambda model: torch.cat([p.detach().flatten() for p in model.parameters()])  # noqa: E731
    cosine = lambda a, b: float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))  # noqa: E731
    assert not torch.equal(flat(tuned), flat(demo))
    assert cosine(tuned, demo) > 0.9 > 0.5 > cosine(fresh, demo), (cosine(tuned, demo), cosine(fresh, demo))

    # The site's calibration on half the test patients; then both checkpoints on the other half.
    evaluate(["--checkpoint", str(run / "best"), "--csv", str(site / "test.csv"), "--out", str(tmp_path / "eval_ft")])
    result = calibrate(["--checkpoint", str(run / "best"), "--eval", str(tmp_path / "eval_ft"), "--out",
                        str(tmp_path / "site_ckpt"), "--split-off", "0.5"])  # fmt: skip
    held = tmp_path / "site_ckpt/site_calibration/heldout_images.csv"
    held_studies = set(pd.read_csv(held, dtype=str)["study_id"])
    before = tmp_path / "site_ckpt/site_calibration/before/study_predictions.csv"
    assert held_studies and set(pd.read_csv(before, dtype=str)["study_id"]) == held_studies
    assert result["site_calibration"]["n_studies_heldout"] == len(held_studies)
    assert checkpoint_config(tmp_path / "site_ckpt")["weights_sha256"] == checkpoint_config(run / "best")[
        "weights_sha256"
    ]
    for name, checkpoint in (("demo", DEMO), ("site", tmp_path / "site_ckpt")):
        evaluate(["--checkpoint", str(checkpoint), "--csv", str(held), "--out", str(tmp_path / f"eval_{name}")])
    compared = compare([str(tmp_path / "eval_demo"), str(tmp_path / "eval_site"), "--out", str(tmp_path / "cmp")])
    assert compared["overall"]["studies"] == len(held_studies)
    assert json.loads((tmp_path / "cmp/compare.json").read_text())["reading"]
    assert re.search(r"wrote .*compare\.json", capsys.readouterr().out)


def test_init_from_starts_from_the_checkpoints_network_and_names_a_mismatch(fresh_accelerator_state):
    from accelerate import PartialState

    from mura_mt.training.loop import start_from_checkpoint

    PartialState(cpu=True)  # as train.py has it: the loop logs through Accelerate

    cfg = load_config(REPO / "configs/smoke.yaml", [f"model.init_from={DEMO}"])
    model = start_from_checkpoint(cfg)
    demo, _ = load_checkpoint(DEMO)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), demo.state_dict().values()))
    assert model.anomaly_head.weight.requires_grad
    other = load_config(REPO / "configs/smoke.yaml", [f"model.init_from={DEMO}", "model.backbone=resnet34"])
    with pytest.raises(ValueError, match="resnet18 checkpoint, but model.backbone is resnet34"):
        start_from_checkpoint(other)
