"""The serving block of scripts/benchmark.py: the real app (``python app.py``) on loopback, measured through
``gradio_client`` as a user's program would call it.

Cold start: from starting the process to the first answer of /predict. Then, at concurrency 1, 4 and 16,
batches of /predict calls (one image, no explanation) submitted together: requests/s and per-request p50/p95
latency. ``concurrent16_vs_sequential`` is the wall time of 16 calls at once over 16 calls one after another
(medians of three interleaved bursts).
Bounded: a fixed number of requests, each with a timeout; the server is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]  # app.py and examples/ live in the repository


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _round(client, file, concurrency: int, requests: int) -> dict:
    """``requests`` calls, at most ``concurrency`` in flight; wall time and per-request latencies."""
    latencies: list[float] = []
    start = time.perf_counter()
    for first in range(0, requests, concurrency):
        batch = min(concurrency, requests - first)
        submitted = [
            (time.perf_counter(), client.submit(file, "auto", False, api_name="/predict")) for _ in range(batch)
        ]
        for sent, job in submitted:
            job.result(timeout=120)
            latencies.append((time.perf_counter() - sent) * 1000)
    return {"wall_s": time.perf_counter() - start, "latencies_ms": latencies}


def serving_block(checkpoint: str | None, quick: bool, app_args: tuple[str, ...] = ()) -> dict:
    from gradio_client import Client, handle_file

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "app.py"), "--port", str(port)]
    if checkpoint:
        command += ["--checkpoint", checkpoint]
    command += list(app_args)
    with tempfile.TemporaryDirectory(prefix="mura-mt-serve-") as folder:
        image = Path(folder) / "view.png"
        Image.open(REPO / "examples/synthetic_wrist_abnormal.png").save(image)
        started = time.perf_counter()
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
        try:
            client, deadline = None, started + 180
            while client is None:
                if server.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"the app did not start (exit code {server.poll()})")
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                except Exception:  # not listening yet
                    time.sleep(0.2)
            file = handle_file(str(image))
            client.predict(file, "auto", False, api_name="/predict")
            cold_start_s = time.perf_counter() - started
            requests = 8 if quick else 32
            rounds = {}
            for concurrency in (1, 4, 16):
                _round(client, file, concurrency, min(requests, 4))  # warm-up at this concurrency
                rounds[concurrency] = _round(client, file, concurrency, requests)
            bursts = [(_round(client, file, 1, 16)["wall_s"], _round(client, file, 16, 16)["wall_s"]) for _ in range(3)]
            sixteen_sequential = statistics.median(b[0] for b in bursts)
            sixteen_concurrent = statistics.median(b[1] for b in bursts)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "cold_start_to_first_answer_s": cold_start_s,
        "requests_per_round": requests,
        **{
            f"concurrency_{c}": {
                "requests_per_s": len(r["latencies_ms"]) / r["wall_s"],
                "p50_ms": statistics.median(r["latencies_ms"]),
                "p95_ms": _percentile(r["latencies_ms"], 95),
            }
            for c, r in rounds.items()
        },
        "sixteen_sequential_s": sixteen_sequential,
        "sixteen_concurrent_s": sixteen_concurrent,
        "concurrent16_vs_sequential": sixteen_concurrent / sixteen_sequential,
        "goals": {"concurrent16_vs_sequential": "<= 0.5", "cold_start_to_first_answer_s": "<= 15"},
    }
