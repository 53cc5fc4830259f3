"""The app for real: a server on loopback started as `python app.py`, gradio_client, raw HTTP, a real Chromium."""

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mura_mt.data import read_mura_index
from tests.browser import chromium
from tests.conftest import REPO, free_port, running_app

ARTIFACTS = Path(os.environ.get("MURA_MT_ARTIFACTS", REPO / "artifacts"))


class _Server(str):
    """The app's URL, knowing its process id (for memory measurements)."""

    def __new__(cls, url: str, pid: int):
        server = super().__new__(cls, url)
        server.pid = pid
        return server


@pytest.fixture(scope="module")
def server():
    """`python app.py` exactly as the README says (bundled demo checkpoint), on a free loopback port."""
    log = open(ARTIFACTS.parent / ".app-test.log", "w") if ARTIFACTS.parent.exists() else subprocess.DEVNULL
    with running_app(log) as (url, pid):
        yield _Server(url, pid)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def test_build_demo_constructs_without_launch(trained_run):
    import gradio as gr

    from app import build_demo
    from mura_mt import Predictor

    demo = build_demo(Predictor.from_pretrained(trained_run / "best"))
    assert isinstance(demo, gr.Blocks)


@pytest.mark.slow
def test_single_image_api(client, sample_images):
    from gradio_client import handle_file

    result, overlay_path = client.predict(handle_file(sample_images["single"]), "auto", True, api_name="/predict")
    assert {"body_part", "part_probs", "abnormal_prob", "threshold", "is_abnormal", "gated_by", "warnings"} <= set(
        result
    )
    assert sum(result["part_probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["gated_by"] == "predicted" and 0 <= result["abnormal_prob"] <= 1
    with Image.open(overlay_path) as overlay, Image.open(sample_images["single"]) as original:
        assert overlay.format == "PNG" and overlay.size == original.size and overlay.mode == "RGB"
    again, _ = client.predict(handle_file(sample_images["single"]), "auto", True, api_name="/predict")
    assert again == result


@pytest.mark.slow
def test_study_api_and_override(client, sample_images):
    from gradio_client import handle_file

    files = [handle_file(p) for p in sample_images["study"]]
    details, gallery, verdict, part_probs = client.predict(files, "wrist", True, api_name="/predict_study")
    assert details["gated_by"] == "given" and details["body_part"] == "wrist"
    assert len(details["views"]) == len(files) and len(gallery) == 2 * len(files)
    outlined = [item["caption"] for item in gallery if item["caption"].endswith("evidence region outlined")]
    assert len(outlined) == sum(view["region"] is not None for view in details["views"]) > 0
    assert details["abnormal_prob"] == pytest.approx(np.mean([v["abnormal_prob"] for v in details["views"]]))
    assert ("ABNORMAL" in verdict) == details["is_abnormal"] and "wrist" in verdict


@pytest.mark.slow
def test_bad_file_is_a_clear_error_and_the_server_stays_healthy(client, sample_images, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    before, _ = client.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
    bad = tmp_path / "notes.png"
    bad.write_text("<html><script>alert(1)</script></html>")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(Path(sample_images["single"]).read_bytes()[:500])
    for path, message in ((bad, "not a PNG, JPEG or DICOM"), (truncated, "truncated or corrupt")):
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), "auto", True, api_name="/predict")
    after, _ = client.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
    assert after == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "route",
    [
        "gradio_api/file=/etc/passwd",
        "gradio_api/file=../../../../etc/passwd",
        "gradio_api/file=..%2F..%2F..%2Fetc%2Fpasswd",
        "gradio_api/file=app.py",
        "gradio_api/file=checkpoints/demo/model.safetensors",
        "gradio_api/file=" + str(REPO / "app.py"),
    ],
)
def test_file_routes_do_not_leak_server_files(server, route):
    response = httpx.get(server + route, timeout=10)
    assert response.status_code in (403, 404), (route, response.status_code)


@pytest.mark.slow
def test_run_route_and_monitoring_are_closed(server):
    assert (
        httpx.post(server + "gradio_api/run/predict", json={"data": [None, "auto", True]}, timeout=10).status_code
        == 404
    )
    assert httpx.get(server + "monitoring", timeout=10).status_code in (403, 404)  # enable_monitoring=False


@pytest.mark.slow
def test_browser_upload_click_verdict_and_overlay(server, sample_images):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        for name, viewport in (
            ("laptop", {"width": 1280, "height": 900}),
            ("phone", {"width": 390, "height": 844}),
        ):
            page = browser.new_page(viewport=viewport)
            page.goto(server, wait_until="networkidle")
            page.set_input_files("#upload input[type=file]", sample_images["study"])
            page.wait_for_timeout(500)
            page.click("#analyze")
            page.wait_for_selector("#verdict h2", timeout=60_000)
            assert re.search(r"(ABNORMAL|NORMAL): abnormality probability \d\.\d\d", page.inner_text("#verdict"))
            page.wait_for_selector("#overlays img", timeout=60_000)
            assert page.locator("#overlays img").count() >= 2
            page.screenshot(path=str(ARTIFACTS / f"app-{name}.png"), full_page=True)
            page.close()
    assert (ARTIFACTS / "app-laptop.png").stat().st_size > 10_000


@pytest.mark.slow
def test_browser_example_answers_on_click_and_warnings_stand_above_the_verdict(server):
    """The examples were answered at start-up: a click shows the verdict without pressing Analyze. A real
    radiograph (the demo knows only synthetic ones) gets the "unlike the training images" warning, above the
    verdict."""
    from pydicom.data import get_testdata_file

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server, wait_until="networkidle")
        page.locator("#examples tbody tr").first.click()
        page.wait_for_selector("#verdict h2", timeout=15_000)
        assert re.search(r"(ABNORMAL|NORMAL): abnormality probability", page.inner_text("#verdict"))
        page.goto(server, wait_until="networkidle")  # a fresh page: the real radiograph alone
        page.set_input_files("#upload input[type=file]", get_testdata_file("RG3_UNCR.dcm"))
        page.wait_for_timeout(500)
        page.click("#analyze")
        page.wait_for_function(
            "document.querySelector('#verdict').innerText.includes('unlike the images')", timeout=60_000
        )
        text = page.inner_text("#verdict")
        assert text.index("unlike the images this model was trained on") < text.index("abnormality probability")
        page.screenshot(path=str(ARTIFACTS / "app-warning.png"), full_page=True)
        page.close()


@pytest.mark.slow
def test_dicom_upload_through_the_api_has_the_srs_region(client, tmp_path):
    """A real CR through /predict: its region is the polygon the node's SR carries for the same image."""
    import pydicom
    from gradio_client import handle_file
    from pydicom.data import get_testdata_file

    from mura_mt.dicom_node.outputs import ModelIdentity
    from mura_mt.dicom_node.sr import read_report, structured_report
    from mura_mt.imaging.io import load_radiograph
    from mura_mt.inference.predictor import Predictor

    path = get_testdata_file("RG3_UNCR.dcm")
    result, overlay_path = client.predict(handle_file(path), "auto", True, api_name="/predict")
    assert result["body_part"] in ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")
    with Image.open(overlay_path) as overlay:
        assert overlay.size == (1760, 1760)
    node = Predictor.from_pretrained(REPO / "checkpoints/demo", precision="auto", runtime="auto")  # as the node runs
    answer = node.predict_study([load_radiograph(path)], explain=True)
    report = structured_report([pydicom.dcmread(path)], answer, [], ModelIdentity.of(REPO / "checkpoints/demo", "N"))
    outline = read_report(report)["views"][0]["region"]["outline"]
    assert result["region"] is not None and len(result["region"]) == len(outline)
    assert np.abs(np.array(result["region"]) - np.array(outline)).max() <= 0.15  # float32 in the SR, 0.1 px rounding


@pytest.mark.slow
def test_oversized_upload_is_refused_with_413(server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024))
    with open(big, "rb") as f:
        response = httpx.post(server + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=60)
    assert response.status_code == 413


@pytest.mark.slow
def test_burst_beyond_the_queue_is_refused_quickly_and_admitted_jobs_finish(server, client, sample_images):
    """40 jobs joined within milliseconds (raw queue/join, as a flood of clients would): the queue admits what
    fits, refuses the rest at once with 503, every admitted job completes, and the answer is unchanged."""
    import uuid

    from gradio_client import handle_file

    reference, _ = client.predict(handle_file(sample_images["single"]), "auto", True, api_name="/predict")
    with open(sample_images["single"], "rb") as f:
        uploaded = httpx.post(server + "gradio_api/upload", files={"files": f}, timeout=30).json()[0]
    config = httpx.get(server + "config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")
    file_data = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    sessions = [uuid.uuid4().hex for _ in range(40)]
    ready = threading.Barrier(len(sessions))

    def join(session: str) -> httpx.Response:
        body = {"data": [file_data, "auto", True], "fn_index": fn_index, "session_hash": session}
        ready.wait(timeout=30)  # all at once
        return httpx.post(server + "gradio_api/queue/join", json=body, timeout=30)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(sessions)) as pool:
        answers = list(pool.map(join, sessions))
    assert time.perf_counter() - start < 10  # refusals are immediate, not after a wait
    admitted = [s for s, answer in zip(sessions, answers) if answer.status_code == 200]
    refusals = [answer for answer in answers if answer.status_code != 200]
    assert all(a.status_code == 503 and "Queue is full" in a.text for a in refusals), refusals[0].text
    refused = len(refusals)
    assert refused > 0 and len(admitted) >= 16
    for session in admitted:
        assert _completed(server, session)["success"], session
    again, _ = client.predict(handle_file(sample_images["single"]), "auto", True, api_name="/predict")
    assert again == reference


def _completed(server: str, session: str) -> dict:
    """Read a queued job's event stream until it completes; returns the completion message."""
    import json

    url = server + f"gradio_api/queue/data?session_hash={session}"
    with httpx.stream("GET", url, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no completion for {session}")


@pytest.mark.slow
def test_unexpected_failure_reaches_the_client_without_internals(trained_run, sample_images):
    """Inject a fault inside the model call: the client gets a generic error, no message, path or trace."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from app import build_demo
    from mura_mt import Predictor

    predictor = Predictor.from_pretrained(trained_run / "best")

    def broken_backbone(*args, **kwargs):
        raise RuntimeError("internal detail /secret/path/weights.bin")

    predictor.model.backbone.forward = broken_backbone
    demo = build_demo(predictor)
    demo.queue(max_size=4, api_open=False)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError) as err:
            client.predict(handle_file(sample_images["single"]), "auto", True, api_name="/predict")
        assert "secret" not in str(err.value) and "RuntimeError" not in str(err.value)
    finally:
        demo.close()


@pytest.mark.slow
def test_concurrent_requests_with_different_images_equal_sequential_ones(client, synthetic_root):
    """Several requests run at once (concurrency > 1): each answer and overlay is its own, as if sequential."""
    from gradio_client import handle_file

    paths = read_mura_index(synthetic_root, "valid")["path"].tolist()[:8]
    sequential = [client.predict(handle_file(p), "auto", True, api_name="/predict") for p in paths]
    jobs = [client.submit(handle_file(p), "auto", True, api_name="/predict") for p in paths]
    concurrent = [job.result(timeout=120) for job in jobs]
    for (seq_result, seq_image), (con_result, con_image) in zip(sequential, concurrent):
        assert con_result == seq_result
        assert np.array_equal(np.asarray(Image.open(con_image)), np.asarray(Image.open(seq_image)))


@pytest.mark.slow
def test_short_soak_with_hostile_files(server, tmp_path):
    """scripts/soak.py against the real app: no unexpected error, the golden answer unchanged, memory bounded."""
    from scripts import soak

    report = soak.main(
        ["--url", server, "--requests", "80", "--concurrency", "4", "--hostile-share", "0.4", "--pid", str(server.pid),
         "--max-minutes", "5", "--out", str(tmp_path / "soak.json")]
    )  # fmt: skip
    assert report["requests"] == 80 and report["errors"] == 0, report["error_examples"]
    assert report["refused"] > 10 and report["answered"] > 10  # both kinds really went through
    assert report["golden_unchanged"]
    assert report["rss_growth_mb"] < 200


@pytest.mark.slow
@pytest.mark.parametrize(
    "data",
    [
        [123, "auto", True],  # a number where a file goes
        [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "auto", True],  # never uploaded
        [{"path": "/definitely/missing.png", "meta": {"_type": "gradio.FileData"}}, "auto", True],
        [{"url": "data:image/png;base64,iVBORw0KGgo=", "meta": {"_type": "gradio.FileData"}}, "auto", True],
        # a URL the server must not fetch for a stranger (loopback only: tests never aim at other addresses)
        [{"path": "x.png", "url": "http://127.0.0.1:9/secret.png", "meta": {"_type": "gradio.FileData"}}, "auto", True],
        [None, "knee", True],  # no file, unknown body part
        [None, "x" * 1_000_000, True],  # a huge string
        ["not even a dict", "auto", "yes"],
        [],
    ],
)
def test_api_fed_garbage_answers_cleanly_and_stays_up(server, client, sample_images, data):
    """Raw queue/join with wrong types, huge strings, unknown parts, missing or foreign files, data: URLs: a 4xx
    or a clean error event, never a crash; the next good request gets the same answer as before."""
    import json
    import uuid

    from gradio_client import handle_file

    config = httpx.get(server + "config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")
    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session}
    answer = httpx.post(server + "gradio_api/queue/join", json=body, timeout=60)
    assert answer.status_code < 500, answer.text[:300]
    if answer.status_code == 200:
        url = server + f"gradio_api/queue/data?session_hash={session}"
        with httpx.stream("GET", url, timeout=60) as stream:
            messages = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        completed = [m for m in messages if m.get("msg") == "process_completed"]
        assert completed and not completed[-1]["success"]  # refused, not answered
        assert "Traceback" not in json.dumps(completed[-1]) and "/etc/passwd" not in json.dumps(completed[-1])
    result, _ = client.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
    again, _ = client.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
    assert result == again


def test_foreign_origins_get_no_cors_grant(server):
    """strict_cors: a page on another origin may not read this app's responses (a localhost app is not a proxy
    for whatever site the user happens to visit)."""
    for origin in ("http://evil.example", "null"):
        answer = httpx.get(server + "config", headers={"Origin": origin}, timeout=10)
        assert answer.headers.get("access-control-allow-origin") not in (origin, "*")


@pytest.mark.slow
def test_api_outputs_have_names(client):
    """view_api() names what each route returns (not value_22, value_23), so a caller can read it."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [r["label"] for r in api["/predict"]["returns"]] == ["result", "overlay"]
    assert [r["label"] for r in api["/predict_study"]["returns"]] == [
        "study result",
        "Views and Grad-CAM overlays",
        "verdict",
        "Body part",
    ]
