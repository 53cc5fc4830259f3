"""The command-line entry points, called in-process on the smoke run's export."""

import json

import pandas as pd
import pytest

from mura_mt.data import read_mura_index
from scripts import evaluate, predict


def test_evaluate_writes_both_gates_and_study_csv(trained_run, synthetic_root, tmp_path, capsys):
    metrics = evaluate.main(
        ["--checkpoint", str(trained_run / "best"), "--data-root", str(synthetic_root), "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["predicted_gate"]["overall"] == metrics["predicted_gate"]["overall"]
    for gate in ("predicted_gate", "true_gate"):
        for key in ("study_kappa", "study_auroc", "image_auroc", "sensitivity", "specificity", "n_studies"):
            assert key in saved[gate]["overall"]
        assert "wrist" in saved[gate]
    studies = pd.read_csv(tmp_path / "study_predictions.csv")
    assert list(studies.columns) == ["study_id", "body_part", "predicted_part", "label", "prob", "pred"]
    assert len(studies) == read_mura_index(synthetic_root, "valid")["study_id"].nunique()
    assert "body-part accuracy" in capsys.readouterr().out


def test_predict_groups_views_and_reports_bad_files(trained_run, synthetic_root, tmp_path):
    table = read_mura_index(synthetic_root, "valid")
    study_dir = table["path"][0].rsplit("/", 1)[0]
    bad = tmp_path / "bad" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    out = predict.main(
        [
            "--checkpoint",
            str(trained_run / "best"),
            study_dir,
            str(bad),
            "--out",
            str(tmp_path / "p.csv"),
            "--cam-dir",
            str(tmp_path / "cams"),
        ]
    )
    written = pd.read_csv(tmp_path / "p.csv")
    assert len(written) == len(out) == (table["path"].str.startswith(study_dir + "/")).sum() + 1
    good = written[written["error"].isna()]
    assert good["study"].nunique() == 1 and good["body_part"].nunique() == 1
    assert written.loc[written["path"] == str(bad), "error"].str.contains("not a PNG, JPEG or DICOM").all()
    assert len(list((tmp_path / "cams").glob("*.png"))) == len(good)


def test_faithfulness_report(trained_run, synthetic_root, tmp_path):
    from scripts import faithfulness

    report = faithfulness.main(
        [
            "--checkpoint",
            str(trained_run / "best"),
            "--data-root",
            str(synthetic_root),
            "--out",
            str(tmp_path),
            "--max-views",
            "3",
        ]
    )
    assert report["n_views"] == 3 and 0.0 <= report["pointing_game"] <= 1.0
    assert len(report["deletion_gradcam"]) == len(report["deletion_random"]) == 11
    assert json.loads((tmp_path / "faithfulness.json").read_text())["n_views"] == 3
    assert (tmp_path / "deletion.png").stat().st_size > 1000


def test_benchmark_quick_smokes_every_figure(tmp_path, fresh_accelerator_state):
    from scripts import benchmark

    report = benchmark.main(["--quick", "--out", str(tmp_path / "bench.json")])
    training = report["training"]
    for key in ("loader_images_per_s", "compute_images_per_s", "loop_images_per_s", "loop_vs_compute"):
        assert training[key] > 0, key
    assert training["loader_workers"] == 2  # the default worker count
    inference = report["inference"]
    for key in ("predict_ratio", "explain_ratio", "two_stage_ratio", "two_stage_explain_ratio"):
        assert inference[key] > 0, key
    assert inference["parameters"]["ratio"] == pytest.approx(1 / 8, rel=0.01)  # one ResNet-18 vs eight
    assert inference["resident_mb"]["one_model"] > 0 and inference["resident_mb"]["eight_models"] > 0
    assert inference["throughput"]["bf16_batch8_images_per_s"] > 0
    bulk = inference["bulk"]  # the same studies as PNG and as DICOM
    assert bulk["bulk_vs_sequential"] > 0 and bulk["png_files"] == bulk["dicom_files"] > 0
    assert 0 < bulk["bulk_images_per_s"] and bulk["limit_images_per_s"] > 0
    assert bulk["runtime"] in ("onnx", "torch", "onnx-int8") and inference["runtime_auto"] in ("onnx", "torch")
    default = inference["default"]  # what from_pretrained serves, against PyTorch fp32 on fresh studies
    assert default["latency_ms"]["default_explain"] > 0 and default["fresh_synthetic"]["studies"] == 14
    assert set(default["warnings"]) == {"torch", default["runtime"]}
    runtimes = inference["runtimes"]
    for setting in ("64px_batch1", "64px_batch4"):
        for variant in ("torch_fp32", "torch_fp32_captum_explain", "onnx_fp32", "onnx_fp32_explain", "onnx_int8"):
            assert runtimes["latency_ms"][setting][variant] > 0, (setting, variant)
    assert set(runtimes["targets"]) == {
        "onnx_fp32_vs_torch_fp32_batch1",
        "onnx_fp32_explain_vs_torch_captum_batch1",
        "onnx_int8_vs_torch_fp32_batch1",
    }
    dicom = report["dicom"]  # Orthanc -> scripts/dicom_node.py -> Orthanc (installed by .ci/run)
    assert dicom["studies"] == 4 and dicom["studies_per_min"] > 0 and 0 < dicom["p50_s"] <= dicom["p95_s"]
    assert dicom["throughput_ratio"] > 0
    worklist = report["worklist"]  # SQLite and a real PostgreSQL (installed by .ci/run), the app, a real Chromium
    assert worklist["studies"] == 500 and worklist["gradio_floor_ms"] > 0
    for database in ("sqlite", "postgresql"):
        figures = worklist[database]
        for key in ("page_ms", "filtered_ms", "naive_ms", "version_ms", "api_ms", "first_page_ms", "next_page_ms"):
            assert figures[key] > 0, (database, key)
        assert figures["shell_ms"] <= figures["first_page_ms"]
    site = report["site"]  # a year at a site, SQLite and a real PostgreSQL, then the app on the largest
    for database in ("sqlite", "postgresql"):
        for size in ("1000", "5000"):
            figures = site[database][size]
            assert figures["labelled"] > 0.2 * int(size) and figures["disk_mb_per_100k"] > 0, (database, size)
            for key in ("worklist_first_ms", "performance_first_all_ms", "performance_cached_ms", "scrape_first_ms"):
                assert figures[key] > 0, (database, size, key)
        assert "performance_first_all_ms" in site[database]["ratio_largest_to_smallest"]
    assert site["app"]["studies"] == 5000 and site["app"]["performance_median_ms"] > 0 and "| version |" in site["table"]
    serving = inference["serving"]
    assert 0 < serving["cold_start_to_first_answer_s"] < 120
    for concurrency in (1, 4, 16):
        block = serving[f"concurrency_{concurrency}"]
        assert block["requests_per_s"] > 0 and block["p50_ms"] <= block["p95_ms"]
    assert (
        json.loads((tmp_path / "bench.json").read_text())["training"]["loop_images_per_s"]
        == training["loop_images_per_s"]
    )


def test_import_labels_reports_matched_unmatched_conflicting_and_malformed_rows(tmp_path, capsys):
    from mura_mt.bench.worklist_fill import fill
    from mura_mt.site.labels import SiteLabels
    from mura_mt.dicom_node.store import WorklistStore
    from scripts import import_labels

    db = str(tmp_path / "worklist.sqlite")
    store = WorklistStore(db)
    fill(store, 6, 1_700_000_000.0)
    studies, _ = store.worklist()
    a, b, c = studies[0], studies[1], studies[2]
    rows = [
        "accession,study_uid,label,body_part",
        f"{a['accession']},,abnormal,wrist",  # by accession
        f",{b['study_uid']},0,",  # by UID, 0 = normal
        ",2.25.404,normal,",  # no such study
        f"{c['accession']},,maybe,",  # malformed label
        f"{c['accession']},,1,",  # ...the same study again, well formed
        f",{c['study_uid']},0,",  # ...and disagreeing with the row above
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    args = ["--db", db, str(tmp_path / "labels.csv"), "--author", "pacs-admin"]
    with pytest.raises(SystemExit) as exit_code:  # a malformed row is an error...
        import_labels.main([*args, "--dry-run"])
    assert exit_code.value.code == 1 and SiteLabels(store).current(a["study_uid"]) is None  # ...and a dry run writes nothing
    out = capsys.readouterr().out
    assert "2 row(s) matched and would be recorded; 1 unmatched, 2 conflicting, 1 malformed" in out
    assert "line 4: unmatched" in out and "line 5: malformed" in out and "rows of the file disagree" in out
    with pytest.raises(SystemExit):
        import_labels.main(args)
    labels = SiteLabels(store)
    assert labels.current(a["study_uid"])["label"] == 1 and labels.current(a["study_uid"])["body_part"] == "wrist"
    assert labels.current(b["study_uid"])["label"] == 0 and labels.current(b["study_uid"])["source"] == "import"
    assert labels.current(c["study_uid"]) is None and "labels.csv line 2" in labels.current(a["study_uid"])["note"]
