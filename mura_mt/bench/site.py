"""The site block of scripts/benchmark.py (``--only site``): what a year at a busy site costs, at 10,000, 100,000 and
1,000,000 studies (quick: 1,000 and 5,000), on SQLite and on a real PostgreSQL.

Each store is filled through the store's own tables (``site_fill.fill_year``: every study answered and delivered, two
views, three answers sent, 30 % labelled by the RIS, spread over the year before now). Then, in this process, each
operation's time (ms; the median of 5 calls where it is cached, one cold call where the first time is the point):
``version`` (what every open page polls), ``worklist_first`` and ``worklist_late`` (the first page and the page halfway
down), ``performance_first_all`` / ``performance_first_30d`` (the Performance tab's figures of a window, the first
time: a new ``SharedEvidence``, the reliability diagram included) and ``performance_cached``, ``scrape_first`` and
``scrape_cached`` (one Prometheus scrape of a new registry, then of the same), ``drift`` (a new monitor's check); the
store's disk use per 100,000 studies; and the ratio of each time at the largest size to the smallest. Finally, on the
largest SQLite store, ``python app.py --worklist-db FILE --metrics-port P`` on loopback: ``/performance`` and
``/worklist`` through gradio_client and ``/metrics`` over HTTP, five calls each (the first and the median;
``performance_new_window`` asks for a window never computed before, a new one each call), the
app's memory above its idle size (when it first answers) at the end, and, with a real node receiving a study every 2 s
on the same store, the app's CPU seconds a minute and the node's latency with no page open and with 4 Performance
and 4 Worklist pages open in a real Chromium (``site_readers``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from mura_mt.bench.orthanc import free_port
from mura_mt.bench.worklist import _median_ms as _raw_median_ms
from mura_mt.bench.worklist import _wait_until_up
from mura_mt.bench.postgres import postgres_bin, running_postgres
from mura_mt.bench.site_fill import fill_year
from mura_mt.bench.site_readers import readers_block

REPO = Path(__file__).resolve().parents[2]
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 5_000)
GOALS = {"performance_first_all": "<= 2000", "performance_cached": "<= 300", "scrape_first": "<= 300",
         "worklist_first": "<= 300", "worklist_late": "<= 300"}  # fmt: skip


def site_block(quick: bool) -> dict:
    sizes = QUICK_SIZES if quick else SIZES
    report: dict = {"sizes": list(sizes), "goal_ms": GOALS, "labelled_share": 0.3}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mura-mt-bench-site-") as folder:
        kinds = {"sqlite": None}
        if postgres_bin() is not None:
            kinds["postgresql"] = stack.enter_context(running_postgres("sites"))
        else:
            report["postgresql"] = {"skipped": "PostgreSQL is not installed (apt-get install postgresql)"}
        _warm_up(Path(folder) / "warm.sqlite")  # the imports a running app has already paid for
        for kind, server in kinds.items():
            block: dict = {}
            for n in sizes:
                target = str(Path(folder) / f"{n}.sqlite") if kind == "sqlite" else _new_database(server, f"s{n}")
                block[str(n)] = _measure(target, n)
                print(f"site {kind} {n:>9,}: {block[str(n)]}", flush=True)
                if kind == "sqlite" and n == sizes[-1]:
                    report["app"] = _through_the_app(target, n)
            first, last = block[str(sizes[0])], block[str(sizes[-1])]
            block["ratio_largest_to_smallest"] = {k: round(last[k] / first[k], 2) for k in first
                                                  if k.endswith("_ms") and first[k] > 0}  # fmt: skip
            report[kind] = block
    report["table"] = _table(report, sizes)
    print(report["table"])
    return report


def _measure(target: str, n: int) -> dict:
    from prometheus_client import generate_latest

    from mura_mt.dicom_node.store import WorklistStore
    from mura_mt.evaluation.drift import load_reference
    from mura_mt.site.monitoring import DriftMonitor, SiteMetrics
    from mura_mt.site.performance import SharedEvidence

    store = WorklistStore(target, node="NODE")
    started = time.perf_counter()
    written = fill_year(store, n, time.time())
    result = {"fill_s": round(time.perf_counter() - started, 1), "labelled": written["labels"]}
    if store.db.postgres:  # a store that lived a year has been vacuumed and analysed by autovacuum
        import psycopg

        with psycopg.connect(target, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
    result["disk_mb_per_100k"] = round(_disk_bytes(store) / n * 100_000 / 2**20, 1)
    reference = load_reference(REPO / "checkpoints" / "demo")
    result["version_ms"] = _median_ms(store.version)
    result["worklist_first_ms"] = _median_ms(lambda: store.worklist(limit=100))
    result["worklist_late_ms"] = _median_ms(lambda: store.worklist(limit=100, offset=n // 2))
    result["performance_first_all_ms"] = _once_ms(lambda: SharedEvidence(store).figures(days=None, picture=True))
    result["performance_first_30d_ms"] = _once_ms(lambda: SharedEvidence(store).figures(days=30, picture=True))
    shared = SharedEvidence(store)
    shared.figures(days=None, picture=True)
    result["performance_cached_ms"] = _median_ms(lambda: shared.figures(days=None, picture=True))
    result["scrape_first_ms"] = _once_ms(lambda: generate_latest(SiteMetrics(store, DriftMonitor(store, reference)).registry))
    metrics = SiteMetrics(store, DriftMonitor(store, reference))
    result["scrape_cached_ms"] = _median_ms(lambda: generate_latest(metrics.registry))
    result["drift_ms"] = _once_ms(lambda: DriftMonitor(store, reference).check())
    store.close()
    return result


def _warm_up(path: Path) -> None:
    from mura_mt.dicom_node.store import WorklistStore
    from mura_mt.site.performance import SharedEvidence

    store = WorklistStore(path, node="NODE")
    fill_year(store, 500, time.time())
    SharedEvidence(store).figures(days=None, picture=True)
    store.close()


def _through_the_app(target: str, n: int) -> dict:
    import httpx
    import psutil
    from gradio_client import Client

    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--worklist-db", target, "--metrics-port",
                            str(metrics_port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url)
        process = psutil.Process(app.pid)
        client = Client(url, verbose=False)
        idle_mb = process.memory_info().rss / 2**20
        calls = {
            "performance": lambda: client.predict("", "", "any", api_name="/performance"),
            # a window never asked before, each call: computed while the caller waits
            "performance_new_window": lambda: client.predict(str(time.time() - 200 * 86400), "", "any",
                                                             api_name="/performance"),  # fmt: skip
            "worklist": lambda: client.predict("", "", 100, 0, api_name="/worklist"),
            "metrics": lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60).raise_for_status(),
        }
        result: dict = {"studies": n}
        peak = idle_mb
        for name, call in calls.items():
            times = []
            for _ in range(5):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1000)
                peak = max(peak, process.memory_info().rss / 2**20)
            result[f"{name}_first_ms"], result[f"{name}_median_ms"] = round(times[0]), round(statistics.median(times))
        result["idle_mb"], result["above_idle_mb"] = round(idle_mb), round(peak - idle_mb)
        result.update(readers_block(url, process, target, 10 if n < 100_000 else 60))
        return result
    finally:
        app.terminate()
        app.wait(timeout=60)


def _new_database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def _disk_bytes(store) -> int:
    if store.db.postgres:
        with store.db.transaction() as tx:
            return int(tx.value("SELECT pg_database_size(current_database())"))
    path = Path(store.db.path)
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _median_ms(call, n: int = 5) -> float:
    return round(_raw_median_ms(call, n), 2)


def _once_ms(call) -> float:
    started = time.perf_counter()
    call()
    return round((time.perf_counter() - started) * 1000, 2)


def _table(report: dict, sizes) -> str:
    """The README's table: each operation's time at each size, per database, and the ratio largest/smallest."""
    lines = []
    for kind in ("sqlite", "postgresql"):
        block = report.get(kind)
        if not block or "skipped" in block:
            continue
        keys = [k for k in block[str(sizes[0])] if k.endswith("_ms")]
        head = " | ".join(f"{n:,}" for n in sizes)
        lines += [f"\n{kind}\n", f"| operation (ms) | {head} | {sizes[-1]:,} / {sizes[0]:,} |",
                  "|---|" + "---|" * (len(sizes) + 1)]  # fmt: skip
        for key in keys:
            cells = " | ".join(f"{block[str(n)][key]:g}" for n in sizes)
            lines.append(f"| {key[:-3]} | {cells} | {block['ratio_largest_to_smallest'].get(key, '-')} |")
        disk = " | ".join(f"{block[str(n)]['disk_mb_per_100k']:g}" for n in sizes)
        lines.append(f"| disk, MB per 100,000 studies | {disk} | |")
    return "\n".join(lines)
