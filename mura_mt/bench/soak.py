"""The soak run behind ``scripts/soak.py``: many requests against a running app, good and hostile, bounded.

``concurrency`` simulated users, each with its own ``gradio_client.Client`` and one request at a time, send
``/predict`` calls. (One client shared by many in-flight jobs loses some of them to a race in gradio_client's
shared event stream: CancelledError on 0.4 % of requests in a first 10,000-request run, none of them server
errors.) A hostile file must come back as a clean refusal (an ``AppError`` carrying the app's own message); a
good image must come back answered; a full queue is a clean refusal too. Anything else (an answer to a hostile
file, a generic error, a timeout, a broken connection) is counted in ``errors`` with the first examples kept.
The golden image is predicted before and after: its answer must not change. With ``pid``, the server's resident
memory is read before and after.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mura_mt.bench.hostile import hostile_files

GENERIC_ERRORS = ("", "Error", "None")  # what Gradio sends for an unexpected exception with show_error=False


def _good_images(folder: Path) -> list[str]:
    from mura_mt.data import read_mura_index
    from mura_mt.data.synthetic import make_synthetic_mura

    make_synthetic_mura(folder / "synthetic", studies_per_part=1, valid_studies_per_part=1, seed=7, progress=False)
    return read_mura_index(folder / "synthetic", "valid")["path"].tolist()


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def soak(
    url: str,
    requests: int,
    concurrency: int,
    hostile_share: float = 0.2,
    pid: int | None = None,
    auth: tuple[str, str] | None = None,
    max_seconds: float = 3600.0,
    request_timeout: float = 120.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the soak and return its figures (see the module docstring)."""
    from gradio_client import Client, handle_file

    if not 0.0 <= hostile_share <= 1.0:
        raise ValueError(f"hostile_share must be in [0, 1], got {hostile_share}")
    rng = random.Random(seed)
    client = Client(url, verbose=False, auth=auth)
    with tempfile.TemporaryDirectory(prefix="mura-mt-soak-") as folder:
        folder = Path(folder)
        good = _good_images(folder)
        hostile = []
        for name, data in hostile_files(seed):
            (folder / name).write_bytes(data)
            hostile.append(str(folder / name))
        golden_before, _ = client.predict(handle_file(good[0]), "auto", True, api_name="/predict")
        rss_before = _rss_mb(pid)
        counts = {"answered": 0, "refused": 0, "errors": 0}
        latencies: list[float] = []
        examples: list[str] = []
        lock = threading.Lock()
        plan = [rng.random() < hostile_share for _ in range(requests)]
        choices = [(rng.choice(hostile if h else good), h, rng.random() < 0.5) for h in plan]
        next_request = iter(range(requests))
        bar = tqdm(total=requests, desc="soak", unit="req", disable=not progress, mininterval=2.0)
        started = time.perf_counter()

        def user() -> None:
            """One simulated user: its own client, one request at a time, until the plan or the time runs out."""
            own = Client(url, verbose=False, auth=auth)
            while time.perf_counter() - started < max_seconds:
                with lock:
                    i = next(next_request, None)
                if i is None:
                    return
                path, is_hostile, explain = choices[i]
                sent = time.perf_counter()
                outcome, detail = _call(own, path, is_hostile, explain, request_timeout)
                with lock:
                    counts[outcome] += 1
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if outcome == "errors" and len(examples) < 5:
                        examples.append(detail)
                    bar.update(1)
                    bar.set_postfix(refused=counts["refused"], errors=counts["errors"], refresh=False)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for future in [pool.submit(user) for _ in range(concurrency)]:
                future.result()
        sent_count = sum(counts.values())
        bar.close()
        elapsed = time.perf_counter() - started
        rss_after = _rss_mb(pid)
        golden_after, _ = client.predict(handle_file(good[0]), "auto", True, api_name="/predict")
    return {
        "url": url,
        "requests": sent_count,
        "concurrency": concurrency,
        "hostile_share": hostile_share,
        "answered": counts["answered"],
        "refused": counts["refused"],
        "errors": counts["errors"],
        "error_examples": examples,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        "elapsed_s": elapsed,
        "stopped_by_time_limit": sent_count < requests,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth_mb": None if pid is None else rss_after - rss_before,
        "golden_unchanged": golden_after == golden_before,
    }


def _call(client, path: str, is_hostile: bool, explain: bool, timeout: float) -> tuple[str, str]:
    """One /predict call -> ("answered" | "refused" | "errors", what happened)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    name = Path(path).name
    try:
        client.submit(handle_file(path), "auto", explain, api_name="/predict").result(timeout=timeout)
    except AppError as err:
        message = str(err).strip()
        clean = message not in GENERIC_ERRORS and (is_hostile or "queue" in message.lower())
        return ("refused" if clean else "errors"), f"{name}: {message[:200]}"
    except Exception as err:  # a full queue surfaces as QueueError; anything else is unexpected
        clean = "queue" in str(err).lower()
        return ("refused" if clean else "errors"), f"{name}: {type(err).__name__}: {err}"
    return ("errors" if is_hostile else "answered"), f"{name}: answered"  # a hostile file must never be answered
