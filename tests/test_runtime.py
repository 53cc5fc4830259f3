"""Runtimes: ONNX Runtime answers as PyTorch does at every entry point, Grad-CAM from the forward pass equals Captum's,
the graph cache trusts only its own key, and the int8 graph serves only with a passing accuracy record."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from mura_mt import BODY_PARTS
from mura_mt.data import read_mura_index
from mura_mt.evaluation.evaluate import predict_table
from mura_mt.evaluation.drift import load_reference
from mura_mt.hardware import cpu_has_native_bf16, cpu_int8_kind
from mura_mt.imaging.preprocessing import Preprocessing
from mura_mt.inference.bulk import predict_files
from mura_mt.inference.checkpoint import load_checkpoint
from mura_mt.inference.explain import cam_from_forward, gradcam, pooled_by_average
from mura_mt.inference.onnx_graph import TappedNet, cached_graph, graph_metadata
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import RuntimeChoiceError, resolve_runtime, verified_int8_graph
from mura_mt.inference.serving import ServingConfig
from mura_mt.model import MultiTaskNet
from tests.conftest import REPO
from tests.services import needed

DEMO = REPO / "checkpoints/demo"


@pytest.fixture(scope="module")
def valid_table(synthetic_root):
    return read_mura_index(synthetic_root, "valid")


@pytest.fixture
def int8_cpu():
    """int8 is picked on x86 CPUs with AVX-512 VNNI, AVX-VNNI or AVX2: skipped elsewhere, a failure in CI (whose
    machines have AVX2 at least)."""
    needed(cpu_int8_kind() is not None, "CI's CPU must have AVX2 or VNNI: the default runtime is int8 there",
           "int8 is picked on x86 CPUs with VNNI or AVX2 only")  # fmt: skip


@pytest.fixture(scope="module")
def runtimes():
    return {
        "torch": Predictor.from_pretrained(DEMO, precision="fp32", runtime="torch"),
        "onnx": Predictor.from_pretrained(DEMO, runtime="onnx"),
    }


# --- Grad-CAM from the forward pass --------------------------------------------------------------------------------


def _forward_maps(model: MultiTaskNet, x: torch.Tensor, part_idx: torch.Tensor, target: str) -> torch.Tensor:
    with torch.no_grad():
        feature_map = TappedNet(model)(x)[4]
    head = model.anomaly_head if target == "anomaly" else model.part_head
    return cam_from_forward(feature_map, head.weight, part_idx, x.shape[-2:])


@pytest.mark.parametrize("target", ["anomaly", "part"])
def test_cam_from_the_forward_equals_captum(runtimes, valid_table, target):
    predictor = runtimes["torch"]
    model = predictor.model
    x = torch.cat([predictor.preprocess(p) for p in valid_table["path"][::3]])  # every part, several images
    with torch.no_grad():
        predicted = model(x).part_logits.argmax(1)
    for part_idx in (predicted, torch.arange(len(x)) % len(BODY_PARTS)):  # the predicted gate and given parts
        captum = gradcam(model, x, part_idx, target)
        ours = _forward_maps(model, x, part_idx, target)
        assert ours.shape == captum.shape == (len(x), 1, *x.shape[-2:])
        assert (ours - captum).abs().max() <= 1e-4
        assert torch.equal(ours.flatten(1).amax(1) == 0, captum.flatten(1).amax(1) == 0)
        # The check can fail: another head's weights give other maps.
        wrong = _forward_maps(model, x, (part_idx + 1) % len(BODY_PARTS), target)
        assert (wrong - captum).abs().max() > 0.1


def test_all_negative_evidence_gives_the_same_zero_maps():
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18").eval()
    with torch.no_grad():
        model.anomaly_head.weight.copy_(-model.anomaly_head.weight.abs())  # layer4 is >= 0 after its ReLU
    x = torch.randn(3, 3, 64, 64)
    part_idx = torch.tensor([0, 3, 6])
    captum, ours = gradcam(model, x, part_idx), _forward_maps(model, x, part_idx, "anomaly")
    assert captum.abs().max() == 0 and ours.abs().max() == 0


def test_the_premise_is_checked_on_the_model_not_assumed():
    assert pooled_by_average(MultiTaskNet("resnet18").eval())
    # MobileNetV3 puts a convolution and an activation between its last stage and the pooled features.
    mobile = MultiTaskNet("mobilenetv3_small_050").eval()
    assert not pooled_by_average(mobile)
    nonlinear = MultiTaskNet("resnet18").eval()
    nonlinear.anomaly_head = torch.nn.Sequential(torch.nn.Linear(512, 7), torch.nn.Tanh())
    assert not pooled_by_average(nonlinear)


def test_other_architectures_keep_captum_in_both_runtimes(tmp_path, valid_table, monkeypatch):
    monkeypatch.setenv("MURA_MT_ONNX_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = MultiTaskNet("mobilenetv3_small_050").eval()
    serving = ServingConfig(Preprocessing(64, (0.5,) * 3, (0.25,) * 3))
    path = valid_table["path"][0]
    plain = Predictor(model, serving)
    assert not plain.cam_from_forward
    reference = plain.predict(path, explain=True)
    from mura_mt.inference.runners import OnnxRunner

    graph = cached_graph(model, "mobilenet-test", 64)
    onnx = Predictor(model, serving, runner=OnnxRunner(graph, model))
    answer = onnx.predict(path, explain=True)
    assert answer.body_part == reference.body_part
    assert answer.abnormal_prob == pytest.approx(reference.abnormal_prob, abs=1e-4)
    assert np.abs(answer.heatmap - reference.heatmap).max() <= 1e-4


# --- Parity: ONNX Runtime fp32 against PyTorch fp32 ------------------------------------------------------------------


def test_logits_parts_verdicts_and_warning_score_agree_on_the_valid_split(runtimes, valid_table):
    torch_logits = predict_table(runtimes["torch"], valid_table, progress=False)
    onnx_logits = predict_table(runtimes["onnx"], valid_table, progress=False)
    for a, b in zip(torch_logits, onnx_logits):
        assert np.abs(a - b).max() <= 1e-4
    paths = valid_table["path"].tolist()
    a, b = runtimes["torch"].predict_batch(paths), runtimes["onnx"].predict_batch(paths)
    assert [p.body_part for p in a] == [p.body_part for p in b]
    assert [p.is_abnormal for p in a] == [p.is_abnormal for p in b]
    assert max(abs(x.unlike_training - y.unlike_training) for x, y in zip(a, b)) <= 1e-3
    assert len({p.body_part for p in a}) == len(BODY_PARTS)


def test_every_entry_point_answers_the_same(runtimes, valid_table, synthetic_root, tmp_path):
    study = valid_table[valid_table["study_id"] == valid_table["study_id"][0]]["path"].tolist()
    image, dicom = valid_table["path"][5], get_testdata_file("RG3_UNCR.dcm")
    answers = {}
    for name, predictor in runtimes.items():
        answers[name] = {
            "image": predictor.predict(image, explain=True),
            "given": predictor.predict(image, body_part="hand", explain=True),
            "study": predictor.predict_study(study, explain=True),
            "batch": predictor.predict_batch([image, dicom], explain=True),
            "dicom": predictor.predict(dicom, explain=True),
        }
        answers[name]["bulk"] = predict_files(
            predictor, {"s": study}, cam_dir=tmp_path / name, progress=False, workers=1
        )
    views = lambda a: [a["image"], a["given"], *a["study"].views, *a["batch"], a["dicom"]]  # noqa: E731
    for t, o in zip(views(answers["torch"]), views(answers["onnx"])):
        assert (t.body_part, t.gated_by, t.is_abnormal, t.warnings) == (
            o.body_part,
            o.gated_by,
            o.is_abnormal,
            o.warnings,
        )
        assert o.abnormal_prob == pytest.approx(t.abnormal_prob, abs=1e-5)
        assert o.unlike_training == pytest.approx(t.unlike_training, abs=1e-3)
        assert t.heatmap.shape == o.heatmap.shape and np.abs(t.heatmap - o.heatmap).max() <= 1e-4
    assert answers["onnx"]["study"].abnormal_prob == pytest.approx(answers["torch"]["study"].abnormal_prob, abs=1e-5)
    for t, o in zip(answers["torch"]["bulk"], answers["onnx"]["bulk"]):
        assert t["body_part"] == o["body_part"] and t["abnormal_prob"] == pytest.approx(o["abnormal_prob"], abs=1e-5)


# --- Choosing a runtime; the graph cache -----------------------------------------------------------------------------


def test_runtime_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("MURA_MT_RUNTIME", raising=False)
    choose = lambda *args, **kw: resolve_runtime(*args, **kw).name  # noqa: E731
    # precision auto with a gated int8 graph: int8 on CPUs with VNNI or AVX2.
    with_int8 = "onnx-int8" if cpu_int8_kind() else ("torch" if cpu_has_native_bf16() else "onnx")
    assert choose("auto", cpu, int8_problem=None) == with_int8 and choose(None, cpu, int8_problem=None) == with_int8
    # Without one: PyTorch bf16 where the CPU has native bf16, ONNX Runtime fp32 elsewhere, and it says why.
    without = resolve_runtime("auto", cpu, int8_problem="ckpt has no int8 model")
    assert without.name == ("torch" if cpu_has_native_bf16() else "onnx") and "ckpt has no int8 model" in without.why
    assert choose("auto", cpu, precision="fp32", int8_problem=None) == "onnx"  # fp32 asked for: never int8
    assert choose("auto", cuda, int8_problem=None) == "torch"
    assert choose("auto", cpu, precision="bf16", int8_problem=None) == "torch"  # bf16 is PyTorch's
    assert choose("torch", cpu) == "torch"
    monkeypatch.setenv("MURA_MT_RUNTIME", "torch")
    assert choose(None, cpu, int8_problem=None) == "torch"
    with pytest.raises(RuntimeChoiceError, match="CPU only"):
        resolve_runtime("onnx", cuda)
    with pytest.raises(RuntimeChoiceError, match="no bf16"):
        resolve_runtime("onnx", cpu, precision="bf16")
    with pytest.raises(RuntimeChoiceError, match="one of"):
        resolve_runtime("tensorrt", cpu)


def test_int8_only_where_the_cpu_has_the_instructions(monkeypatch):
    import mura_mt.inference.runners as runners

    cpu = torch.device("cpu")
    monkeypatch.delenv("MURA_MT_RUNTIME", raising=False)
    monkeypatch.setattr(runners, "cpu_int8_kind", lambda: None)  # e.g. an ARM server
    choice = resolve_runtime("auto", cpu, int8_problem=None)
    assert choice.name != "onnx-int8" and "neither VNNI nor AVX2" in choice.why
    monkeypatch.setattr(runners, "cpu_int8_kind", lambda: "AVX2")
    assert resolve_runtime("auto", cpu, int8_problem=None) == (
        "onnx-int8",
        "the int8 graph passed its accuracy gate; AVX2 CPU",
    )


def test_the_python_default_is_the_gated_int8_graph_with_its_own_warning_and_drift_reference(monkeypatch, int8_cpu):
    monkeypatch.delenv("MURA_MT_RUNTIME", raising=False)
    config = json.loads((DEMO / "config.json").read_text())
    predictor = Predictor.from_pretrained(DEMO)
    assert (predictor.runtime, predictor.precision) == ("onnx-int8", "int8") and "accuracy gate" in predictor.runner.why
    fitted = config["onnx_int8"]["ood"]["thresholds"]
    assert predictor.ood.thresholds.tolist() == pytest.approx([fitted["knn"], fitted["style"]])
    assert predictor.ood.thresholds[0] != pytest.approx(config["ood"]["thresholds"]["knn"])  # not fp32's
    assert Predictor.from_pretrained(DEMO, precision="fp32", runtime="torch").ood.thresholds[0] == pytest.approx(
        config["ood"]["thresholds"]["knn"]
    )
    int8_reference, fp32_reference = load_reference(DEMO, "onnx-int8"), load_reference(DEMO, "torch")
    assert int8_reference != fp32_reference and fp32_reference == load_reference(DEMO)


def test_an_int8_server_never_builds_the_pytorch_network(int8_cpu):
    """The cold start's largest saving: the int8 graph answers (Grad-CAM and region included) without timm, which
    brings torchvision and torch._dynamo; the network is built only when something asks for it, and then it is
    the checkpoint's."""
    script = f"""
import sys
from mura_mt.inference.predictor import Predictor
p = Predictor.from_pretrained({str(DEMO)!r})
answer = p.predict({str(REPO / "examples/synthetic_wrist_abnormal.png")!r}, explain=True)
assert p.runtime == "onnx-int8" and answer.heatmap is not None and answer.region, answer
print(sorted(m for m in ("timm", "torchvision", "torch._dynamo") if m in sys.modules))
model = p.model
print(type(model).__name__, "timm" in sys.modules, model.training)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["[]", "MultiTaskNet True False"]


def test_the_default_agrees_with_fp32_within_the_gate_on_studies_it_never_saw(tmp_path, int8_cpu):
    """175 fresh synthetic studies (another seed than the demo's training data): the default runtime's answers pass
    the same gate its export passed, and its warning flags as few of them as fp32's does."""
    from mura_mt.bench.default_runtime import agreement, fresh_tree

    default = Predictor.from_pretrained(DEMO)
    fp32 = Predictor.from_pretrained(DEMO, precision="fp32", runtime="torch")
    table = read_mura_index(fresh_tree(tmp_path), "valid")
    record = agreement(default, fp32, table, "fresh")
    assert default.runtime == "onnx-int8" and record["studies"] == 175
    assert record["passed"], record["failures"]
    assert abs(record["warned_int8"] - record["warned_fp32"]) <= 0.01 * record["views"]


def test_auto_says_why_it_does_not_serve_a_failed_int8_graph(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MURA_MT_RUNTIME", raising=False)
    checkpoint = shutil.copytree(DEMO, tmp_path / "ckpt")
    config = json.loads((checkpoint / "config.json").read_text())
    config["onnx_int8"]["accuracy"] = {"passed": False, "failures": ["part_agreement is 0.9900 (min 0.995)"]}
    (checkpoint / "config.json").write_text(json.dumps(config))
    with caplog.at_level("INFO", logger="mura_mt.inference.runners"):
        predictor = Predictor.from_pretrained(checkpoint)
    assert predictor.runtime != "onnx-int8"
    assert "failed its accuracy gate (part_agreement is 0.9900 (min 0.995))" in caplog.text
    with pytest.raises(RuntimeChoiceError, match="part_agreement"):
        Predictor.from_pretrained(checkpoint, runtime="onnx-int8")


def test_graph_cache_is_keyed_by_the_weights_and_never_trusts_a_wrong_key(tmp_path):
    model, config = load_checkpoint(DEMO)
    size, sha = config["preprocessing"]["image_size"], config["weights_sha256"]
    first = cached_graph(model, sha, size, tmp_path)
    assert graph_metadata(first)["mura_mt.weights_sha256"] == sha
    stamp = first.stat().st_mtime_ns
    assert cached_graph(model, sha, size, tmp_path) == first and first.stat().st_mtime_ns == stamp  # reused
    other = cached_graph(model, "0" * 64, size, tmp_path)  # other weights: another file
    assert other != first
    shutil.copy(other, first)  # a graph whose recorded key is not this one's is rebuilt, not trusted
    rebuilt = cached_graph(model, sha, size, tmp_path)
    assert graph_metadata(rebuilt)["mura_mt.weights_sha256"] == sha
    first.write_bytes(b"not an onnx file")
    assert graph_metadata(cached_graph(model, sha, size, tmp_path))["mura_mt.weights_sha256"] == sha


def test_int8_serves_only_with_a_matching_passing_record(tmp_path):
    checkpoint = shutil.copytree(DEMO, tmp_path / "ckpt")
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("onnx_int8", None)
    with pytest.raises(RuntimeChoiceError, match="no int8 model"):
        verified_int8_graph(checkpoint, config)
    (checkpoint / "model.int8.onnx").write_bytes(b"graph")
    from mura_mt.inference.checkpoint import file_sha256

    (checkpoint / "ood.int8.safetensors").write_bytes(b"statistics")
    good = {
        "file": "model.int8.onnx",
        "sha256": file_sha256(checkpoint / "model.int8.onnx"),
        "weights_sha256": config["weights_sha256"],
        "ood": {"file": "ood.int8.safetensors", "sha256": file_sha256(checkpoint / "ood.int8.safetensors")},
        "accuracy": {"passed": True},
    }
    assert verified_int8_graph(checkpoint, {**config, "onnx_int8": good}) == checkpoint / "model.int8.onnx"
    for broken, reason in [
        ({**good, "weights_sha256": "f" * 64}, "other weights"),
        ({**good, "sha256": "0" * 64}, "does not match"),
        ({k: v for k, v in good.items() if k != "ood"}, "no warning statistics fitted on its own features"),
        ({**good, "ood": {**good["ood"], "sha256": "0" * 64}}, "ood.int8.safetensors is missing or does not match"),
        ({**good, "accuracy": {"passed": False, "failures": ["study_kappa differs by 0.03"]}}, "study_kappa"),
    ]:
        with pytest.raises(RuntimeChoiceError, match=reason):
            verified_int8_graph(checkpoint, {**config, "onnx_int8": broken})


def test_export_int8_records_what_it_measured_and_serving_obeys_it(trained_run, synthetic_root, tmp_path):
    import scripts.export_onnx as export_onnx
    from mura_mt.evaluation.evaluate import evaluate_checkpoint
    from mura_mt.inference.runners import OnnxRunner

    checkpoint = shutil.copytree(trained_run / "best", tmp_path / "ckpt")
    export_onnx.main(["--checkpoint", str(checkpoint), "--data-root", str(synthetic_root), "--int8"])
    config = json.loads((checkpoint / "config.json").read_text())
    record = config["onnx_int8"]
    assert record["weights_sha256"] == config["weights_sha256"] and record["calibration"]["images"] > 0
    # The recorded int8 figures are what the graph really gives.
    model, _ = load_checkpoint(checkpoint)
    reference = Predictor.from_pretrained(checkpoint, precision="fp32", runtime="torch")
    int8 = Predictor(
        model, reference.serving, ood=reference.ood, runner=OnnxRunner(checkpoint / "model.int8.onnx", model)
    )
    valid = read_mura_index(synthetic_root, "valid")
    metrics, studies = evaluate_checkpoint(int8, valid, progress=False)
    _, fp32_studies = evaluate_checkpoint(reference, valid, progress=False)
    gate = record["accuracy"]
    assert gate["int8"]["study_kappa"] == pytest.approx(metrics["predicted_gate"]["overall"]["study_kappa"])
    assert gate["int8"]["part_accuracy"] == pytest.approx(metrics["part_accuracy"])
    assert gate["study_verdict_agreement"] == pytest.approx((studies["pred"] == fp32_studies["pred"]).mean())
    assert gate["studies"] == len(studies) and gate["views"] == len(valid)
    # The model card says what the gate measured; the warning shipped for int8 is the one recorded.
    card = (checkpoint / "README.md").read_text()
    assert "## int8 on the CPU" in card and f"{gate['study_verdict_agreement']:.4f}" in card
    thresholds = record["ood"]["thresholds"]
    if gate["passed"]:
        served = Predictor.from_pretrained(checkpoint, runtime="onnx-int8")
        assert served.precision == "int8"
        assert served.ood.thresholds.tolist() == pytest.approx([thresholds["knn"], thresholds["style"]])
    else:
        with pytest.raises(RuntimeChoiceError, match="failed its accuracy gate"):
            Predictor.from_pretrained(checkpoint, runtime="onnx-int8")
