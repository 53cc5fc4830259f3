"""Serving limits: login for page and API, a time limit on slow analyses, and cancelled requests that give
their queue slots back. Real servers on loopback (the app's own launch for login; in-process apps around a
deliberately slow model for the limits)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from app import build_demo
from mura_mt import Predictor
from mura_mt.access.users import Users, UsersFileError
from tests.conftest import REPO, free_port, running_app


def test_demo_logins_come_from_the_environment_and_malformed_ones_are_refused_without_echoing_secrets():
    """MURA_MT_AUTH (plain passwords, for loopback demos and Spaces secrets); the users file is test_access's."""
    users = Users.from_plain("carol:one, dave:two:three")
    assert users.verify("carol", "one").roles == {"reader"} and users.verify("dave", "two:three") is not None
    assert users.verify("carol", "two") is None
    with pytest.raises(UsersFileError, match="entry 2") as err:
        Users.from_plain("a:b,c-SECRET")
    assert "SECRET" not in str(err.value)


@pytest.mark.slow
def test_login_guards_page_and_api_and_never_logs_passwords(tmp_path, sample_images):
    from gradio_client import Client, handle_file

    password = f"pw-{uuid.uuid4().hex}"
    log_file = tmp_path / "app.log"
    with (
        open(log_file, "w") as log,
        running_app(log, {"MURA_MT_AUTH": f"alice:{password},bob:other-{password}"}) as (
            url,
            _,
        ),
    ):
        assert httpx.get(url + "config", timeout=10).status_code == 401  # the page's data needs a login
        assert httpx.get(url + "gradio_api/info", timeout=10).status_code == 401
        assert httpx.get(url + "gradio_api/mcp/", timeout=10).status_code in (401, 404)  # MCP stays closed
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
        with pytest.raises(Exception):
            Client(url, verbose=False, auth=("alice", "wrong"))
        client = Client(url, verbose=False, auth=("alice", password))
        result, _ = client.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
        assert 0.0 <= result["abnormal_prob"] <= 1.0
    assert password not in log_file.read_text()


def test_malformed_login_stops_the_app_before_it_serves(tmp_path):
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("alice:ok\nmallory-TOPSECRET\n")
    done = subprocess.run(
        [sys.executable, "app.py", "--auth-file", str(auth_file), "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode != 0 and "line 1: the second field is not an Argon2id or bcrypt hash" in done.stderr
    assert "TOPSECRET" not in done.stderr + done.stdout


@contextlib.contextmanager
def _slow_app(trained_run, seconds: float, queue_size: int, **build):
    """An app whose model takes ``seconds`` per call, launched in-process on a free port."""
    predictor = Predictor.from_pretrained(trained_run / "best")
    backbone_forward = predictor.model.backbone.forward

    def slow_forward(*args, **kwargs):
        time.sleep(seconds)
        return backbone_forward(*args, **kwargs)

    predictor.model.backbone.forward = slow_forward
    demo = build_demo(predictor, **build)
    demo.queue(max_size=queue_size, api_open=False)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.mark.slow
def test_a_slow_analysis_gets_a_clean_error_and_frees_its_worker(trained_run, sample_images, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with _slow_app(trained_run, seconds=4.0, queue_size=4, concurrency=1, time_limit=1.0) as url:
        client = Client(url, verbose=False)
        start = time.perf_counter()
        slow = client.submit(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
        time.sleep(0.3)  # queued behind it, on the only worker
        behind = client.submit(handle_file(str(bad)), "auto", False, api_name="/predict")
        with pytest.raises(AppError, match="took longer than 1 s"):
            slow.result(timeout=60)
        assert time.perf_counter() - start < 3.5  # the limit answered, not the 4 s model
        with pytest.raises(AppError, match="not a PNG, JPEG or DICOM"):
            behind.result(timeout=60)
        assert time.perf_counter() - start < 3.5  # the worker was free again before the slow call ended


@pytest.mark.slow
def test_cancelled_requests_give_their_queue_slots_back(trained_run, sample_images):
    """One worker busy with a slow call, the queue (2) full: joins are refused; cancel the waiting ones (what a
    client that leaves does) and a new join is admitted."""
    with _slow_app(trained_run, seconds=3.0, queue_size=2, concurrency=1, time_limit=30.0) as url:
        with open(sample_images["single"], "rb") as f:
            uploaded = httpx.post(url + "gradio_api/upload", files={"files": f}, timeout=30).json()[0]
        config = httpx.get(url + "config", timeout=30).json()
        fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")
        file_data = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}

        def join() -> tuple[str, httpx.Response]:
            session = uuid.uuid4().hex
            body = {"data": [file_data, "auto", False], "fn_index": fn_index, "session_hash": session}
            return session, httpx.post(url + "gradio_api/queue/join", json=body, timeout=30)

        joined = [join() for _ in range(3)]  # one starts on the worker, two wait
        time.sleep(0.5)
        assert all(answer.status_code == 200 for _, answer in joined)
        _, refused = join()
        assert refused.status_code == 503  # the queue is full
        for session, answer in joined[1:]:
            cancel = {"session_hash": session, "fn_index": fn_index, "event_id": answer.json()["event_id"]}
            assert httpx.post(url + "gradio_api/cancel", json=cancel, timeout=30).status_code == 200
        _, admitted = join()
        assert admitted.status_code == 200, admitted.text


def test_device_follows_zero_gpu_and_cuda(monkeypatch):
    import torch

    from mura_mt.web import zerogpu

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zerogpu.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert zerogpu.resolve_device("cpu") == "cpu"
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # a ZeroGPU Space: the model goes to CUDA at start-up
    assert zerogpu.resolve_device("auto") == ("cuda" if zerogpu.spaces is not None else "cpu")
    analyse = lambda images, part, explain: (images, part, explain)  # noqa: E731
    if zerogpu.spaces is not None:
        monkeypatch.delenv("SPACES_ZERO_GPU")
        assert zerogpu.on_gpu(analyse, 60) is analyse  # off ZeroGPU, spaces.GPU hands the function back unchanged
