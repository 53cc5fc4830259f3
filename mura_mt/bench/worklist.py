"""The worklist block of scripts/benchmark.py: a worklist of 10,000 studies, on SQLite and on a real PostgreSQL.

For each database: ``page_ms``, the store's first page (100 rows, worklist order) and ``filtered_ms`` (one status,
received since a time), median of 30 calls; ``naive_ms``, the same first page computed the naive way in the same run
(every row read, the order computed in Python), and ``page_ratio`` = page_ms / naive_ms; ``version_ms``, the change
check the page polls every few seconds. Then, through ``python app.py --worklist-db`` on loopback:
``api_ms``, the ``/worklist`` call by gradio_client (first page, median of 30), and in a real Chromium
``first_page_ms``, from opening the page to the worklist's first rows drawn (it opens on the worklist; Gradio's
scripts cached, as from a reader's second visit on; ``first_page_cold_ms`` with an empty cache),
``shell_ms``, from opening the page to its heading drawn (Gradio's own start: the part the worklist cannot
change), and ``next_page_ms``, from the "Next page" click to the second page drawn (medians of 9 page loads); and
``gradio_floor_ms``: the same browser opening a bare Gradio page (one heading, same Gradio, same machine) to its heading
drawn, the floor any Gradio page stands on here.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from mura_mt.bench.orthanc import free_port, wait_for
from mura_mt.bench.postgres import postgres_bin, running_postgres
from mura_mt.bench.worklist_fill import fill_bulk

REPO = Path(__file__).resolve().parents[2]
STUDIES = 10_000
START = 1_700_000_000.0


def worklist_block(quick: bool) -> dict:
    from mura_mt.dicom_node.store import WorklistStore

    n = 500 if quick else STUDIES
    calls = 5 if quick else 30
    report: dict = {"studies": n, "goal": {"api_ms": "< 200", "first_page_ms": "< 1000"}}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mura-mt-bench-worklist-") as folder:
        targets = {"sqlite": str(Path(folder) / "worklist.sqlite")}
        if postgres_bin() is not None:
            targets["postgresql"] = stack.enter_context(running_postgres())
        else:
            report["postgresql"] = {"skipped": "PostgreSQL is not installed (apt-get install postgresql)"}
        for kind, target in targets.items():
            store = WorklistStore(target, node="bench")
            fill_bulk(store, n, START)
            block = {
                "page_ms": _median_ms(lambda: store.worklist(limit=100), calls),
                "filtered_ms": _median_ms(
                    lambda: store.worklist(limit=100, status="failed", since=START + n / 2), calls
                ),
                "naive_ms": _median_ms(lambda: _naive_first_page(store), calls),
                "version_ms": _median_ms(store.version, calls),
            }
            block["page_ratio"] = block["page_ms"] / block["naive_ms"]
            block.update(_through_the_app(target, calls, 2 if quick else 9))
            report[kind] = block
            store.close()
    report["gradio_floor_ms"] = _gradio_floor(2 if quick else 9)
    return report


BARE_PAGE = """
import sys, gradio as gr
with gr.Blocks(analytics_enabled=False) as demo:
    gr.Markdown("# bare")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False)
"""


def _gradio_floor(pages: int) -> float | str:
    """Median ms from opening a bare Gradio page to its heading drawn."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", BARE_PAGE, str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/")
        return _browser(f"http://127.0.0.1:{port}/", pages, worklist=False).get("shell_ms", "skipped")
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_until_up(url: str) -> None:
    import httpx

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2) is not None
        except httpx.HTTPError:
            return False

    wait_for(answers, 120, f"{url} to answer", interval=0.2)


def _median_ms(call, n: int) -> float:
    call()  # warm: connections, caches
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _naive_first_page(store) -> list[dict]:
    """The baseline: every study read, then grouped and sorted in Python."""
    with store.db.transaction() as tx:
        rows = tx.rows("SELECT * FROM studies")

    def key(row):
        answered = row["status"] in ("analysed", "delivered")
        warned = answered and json.loads(row["warnings"] or "[]")
        if answered:
            group = 1 if warned else 0 if row["is_abnormal"] else 4 if row["triage"] == "likely normal" else 3
        else:
            group = 2 if row["status"] in ("receiving", "waiting") else 5
        within = -row["abnormal_prob"] if group == 0 else -row["received"]
        return row["read"], group, within, row["study_uid"]

    return sorted(rows, key=key)[:100]


def _through_the_app(target: str, calls: int, pages: int) -> dict:
    from gradio_client import Client

    port = free_port()
    app = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--port", str(port), "--worklist-db", target, "--no-mcp"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url)
        client = Client(url, verbose=False)
        figures = {"api_ms": _median_ms(lambda: client.predict("", "", 100, 0, api_name="/worklist"), calls)}
        figures.update(_browser(url, pages))
        return figures
    finally:
        app.terminate()
        app.wait(timeout=60)


def _browser(url: str, pages: int, worklist: bool = True) -> dict:
    """Page loads in one browser profile: the first with an empty cache (``*_cold_ms``), then ``pages`` more with
    Gradio's scripts cached, as a reader's browser has them from the second visit on (the medians)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        return {"browser": "skipped: chromium is not installed"}
    from playwright.sync_api import sync_playwright

    first_row = "#worklist-table tr[data-uid] td:nth-child(3)"  # the first row's accession
    shell, first, following = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox", "--headless"])
        profile = browser.new_context(viewport={"width": 1280, "height": 900})
        for _ in range(pages + 1):
            page = profile.new_page()
            start = time.perf_counter()
            page.goto(url, wait_until="commit")
            page.wait_for_selector("h1", timeout=60_000)
            shell.append((time.perf_counter() - start) * 1000)
            if worklist:
                page.wait_for_selector(first_row, timeout=60_000)
                first.append((time.perf_counter() - start) * 1000)
                before = page.inner_text(first_row)
                start = time.perf_counter()
                page.click("#worklist-next")
                page.wait_for_function(
                    "([sel, text]) => { const c = document.querySelector(sel); return c && c.innerText !== text; }",
                    arg=[first_row, before],
                    timeout=60_000,
                )
                following.append((time.perf_counter() - start) * 1000)
            page.close()
        browser.close()
    figures = {"shell_ms": statistics.median(shell[1:]), "shell_cold_ms": shell[0]}
    if worklist:
        figures.update(first_page_ms=statistics.median(first[1:]), first_page_cold_ms=first[0],
                       next_page_ms=statistics.median(following))  # fmt: skip
    return figures
