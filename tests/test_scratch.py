"""Nothing left behind: a process's temporary folders go when it exits (normally, SIGTERM, Ctrl-C), and what a
kill -9 leaves is swept by the next start; TMPDIR is respected. In pieces (a small process), then `python app.py`
itself, started three times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from mura_mt.scratch import sweep_orphans
from tests.conftest import REPO, free_port

HOLDER = (
    "import sys, time; from mura_mt.scratch import process_folder, exit_cleanly_on_sigterm; "
    "exit_cleanly_on_sigterm(); print(process_folder('pictures'), flush=True); time.sleep(float(sys.argv[1]))"
)


def _holder(tmp, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(seconds)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    proc.folder = proc.stdout.readline().strip()
    return proc


def _ours(tmp) -> list[str]:
    return sorted(p.name for p in tmp.glob("mura-mt-*"))


def test_folders_go_at_exit_and_on_sigterm_and_a_kill_9_is_swept_by_the_next(tmp_path):
    done = _holder(tmp_path, 0)
    assert done.folder.startswith(str(tmp_path)) and done.wait(timeout=30) == 0
    terminated = _holder(tmp_path, 60)
    terminated.send_signal(signal.SIGTERM)
    terminated.wait(timeout=30)
    assert _ours(tmp_path) == []
    killed, alive = _holder(tmp_path, 60), _holder(tmp_path, 60)
    killed.kill()
    killed.wait(timeout=30)
    (tmp_path / "mura-mt-not-ours").mkdir()  # no owner file: never touched
    removed = sweep_orphans(tmp_path)
    assert [str(p) for p in removed] == [killed.folder]
    assert _ours(tmp_path) == sorted(["mura-mt-not-ours", os.path.basename(alive.folder)])
    alive.kill()
    alive.wait(timeout=30)


@pytest.mark.slow
def test_the_app_started_three_times_leaves_no_folder_of_its_own(tmp_path):
    """SIGTERM, then kill -9, then Ctrl-C: after the third run (whose start sweeps the second's), TMPDIR holds
    nothing of mura-mt's."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE", "MURA_MT_CHECKPOINT"):
        env.pop(key, None)
    left = []
    for stop in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, "app.py did not start"
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert len(_ours(tmp)) >= 3  # its pictures, example cache and uploads (and, after a kill -9, the last run's)
        proc.send_signal(stop)
        proc.wait(timeout=60)
        left.append(_ours(tmp))
    assert left[0] == [] and len(left[1]) >= 3  # a kill -9 leaves them ...
    assert left[2] == []  # ... until the next start sweeps them, and that one cleans its own


def test_a_forked_child_that_exits_leaves_its_parents_folders(tmp_path):
    """A worker forked after the folder was made runs the exit handlers it inherited; the parent's folder stays."""
    script = (
        "import os, sys, tempfile\n"
        f"tempfile.tempdir = {str(tmp_path)!r}\n"
        "from mura_mt.scratch import process_folder\n"
        "folder = process_folder('pictures')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(0)  # a normal exit: atexit handlers run in the child\n"
        "os.waitpid(pid, 0)\n"
        "print(folder.is_dir())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr
    assert _ours(tmp_path) == []  # and the parent's own exit removed it
