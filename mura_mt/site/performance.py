"""The site's figures as the Performance tab and ``/performance`` serve them: computed once per (window, source) and
shared by every open page and every API call, so that the cost of a page does not grow with the number of readers
nor the year with the number of refreshes, and no reader ever waits for a recomputation.

A window's figures are computed again only when the store changed (``WorklistStore.version``) AND the last
computation is at least ``period_s`` old, and then in the background: a reader who asks meanwhile gets the last
figures at once (with the time they were computed; stale-while-revalidate). Only a window never computed before is
computed while its first reader waits, and a computation in progress is waited for, never started twice. A relative
window ("last 30 days") is measured from the time of its computation. ``prepare`` computes the window the pages open
with when the app starts. The figures come from ``SiteLabels.evidence`` without
detail: a few columns of the labelled answers, the bootstrap drawn as counts above
``evaluation.site.EXACT_BOOTSTRAP_MAX`` studies a group, so a year at a busy site costs about a second and a few
hundred MB at most.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from mura_mt.dicom_node.store import WorklistStore
from mura_mt.site.labels import SiteLabels
from mura_mt.site.window import REFRESH_S, still_current

RESAMPLES = 1000  # a page's intervals: enough for two decimals
PERIOD_S = REFRESH_S
log = logging.getLogger(__name__)
MAX_WINDOWS = 32  # (window, source) pairs kept; the API may name any window, so the oldest are forgotten


@dataclass(frozen=True)
class Figures:
    metrics: dict  # the metrics.json dict (overall, parts, coverage, agreement, bootstrap, window)
    picture: str  # the reliability diagram as an <img> (empty without labels, or when not asked for)
    version: int
    computed: float


@dataclass(frozen=True)
class Window:
    """What one set of figures covers: the last ``days`` (from its computation) or [since, until), by ``source``."""

    days: float | None = None
    since: float | None = None
    until: float | None = None
    source: str = "any"
    picture: bool = False


class SharedEvidence:
    def __init__(self, store: WorklistStore, resamples: int = RESAMPLES, period_s: float = PERIOD_S):
        self.store, self.labels = store, SiteLabels(store)
        self.resamples, self.period_s = resamples, period_s
        self._figures: OrderedDict[Window, Figures] = OrderedDict()
        self._locks: dict[Window, threading.Lock] = {}
        self._guard = threading.Lock()
        self._refreshing: list[threading.Thread] = []
        self.computations = 0  # how many times figures were computed (the tests count them)

    def figures(self, days: float | None = None, since: float | None = None, until: float | None = None,
                source: str = "any", picture: bool = False) -> Figures:  # fmt: skip
        """The figures of the last ``days`` (from now) or of [since, until); LabelError for an unknown source."""
        window = Window(days, since, until, source, picture)
        with self._guard:
            lock = self._locks.setdefault(window, threading.Lock())
            known = self._figures.get(window)
        if known is None:
            with lock:  # the first reader computes; the others wait for it and take its result
                with self._guard:
                    known = self._figures.get(window)
                return known if known is not None else self._compute(window)
        if not still_current(known.version, known.computed, self.store.version(), time.time(), self.period_s):
            self._refresh(window, lock)
        return known

    def prepare(self, *windows: Window) -> None:
        """Compute ``windows`` now (the app's start: what its pages open with), so that no reader waits for them and
        the first one computed while a reader waits finds the imports and the store's pages warm (measured: the first
        ``/performance`` call on a million studies took 2.3 s while a background preparation ran beside it, 1.2 s
        after it)."""
        for window in windows:
            with self._guard:
                lock = self._locks.setdefault(window, threading.Lock())
            with lock:
                with self._guard:
                    known = window in self._figures
                if not known:
                    self._compute_logged(window)

    def wait(self, timeout: float | None = None) -> None:
        """Until the background computations started so far have ended (the tests and the benchmark)."""
        with self._guard:
            running = list(self._refreshing)
        for thread in running:
            thread.join(timeout)

    def _refresh(self, window: Window, lock: threading.Lock) -> None:
        if not lock.acquire(blocking=False):
            return  # being computed: the readers keep the last figures until it ends

        def compute():
            try:
                self._compute_logged(window)
            finally:
                lock.release()
                with self._guard:
                    self._refreshing.remove(threading.current_thread())

        thread = threading.Thread(target=compute, name="performance-figures", daemon=True)
        with self._guard:
            self._refreshing.append(thread)
        thread.start()

    def _compute_logged(self, window: Window) -> None:
        try:
            self._compute(window)
        except Exception as err:  # noqa: BLE001 - the store was unreachable, say: the next reader tries again
            log.warning("the site's figures for %s were not computed: %s", window, err)

    def _compute(self, window: Window) -> Figures:
        version, now = self.store.version(), time.time()
        start = now - window.days * 86400 if window.days is not None else window.since
        metrics, studies = self.labels.evidence(start, window.until, window.source, self.resamples, detail=False)
        drawn = _reliability(studies) if window.picture and len(studies) else ""
        made = Figures(metrics, drawn, version, time.time())  # the period counts from the figures' completion
        with self._guard:
            self.computations += 1
            self._figures[window] = made
            self._figures.move_to_end(window)
            while len(self._figures) > MAX_WINDOWS:
                forgotten, _ = self._figures.popitem(last=False)
                self._locks.pop(forgotten, None)
        return made


def _reliability(studies) -> str:
    from mura_mt.evaluation.site_report import reliability_figure

    png = reliability_figure(studies).png
    encoded = base64.b64encode(png).decode()
    return f'<img alt="reliability" style="max-width:420px" src="data:image/png;base64,{encoded}">'
