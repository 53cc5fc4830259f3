"""The site's figures as the Performance tab and ``/performance`` serve them: computed once per (window, source) and
shared by every open page and every API call, so that the cost of a page does not grow with the number of readers
nor the year with the number of refreshes.

A window's figures are computed again only when the store changed (``WorklistStore.version``) AND the last
computation is at least ``period_s`` old; a reader who asks meanwhile gets the last figures at once (with the time
they were computed), and a computation in progress is waited for, never started twice. A relative window ("last 30
days") is measured from the time of its computation. The figures come from ``SiteLabels.evidence`` without detail:
a few columns of the labelled answers, the bootstrap drawn as counts above ``evaluation.site.EXACT_BOOTSTRAP_MAX``
studies a group, so a year at a busy site costs about a second and a few hundred MB at most.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from mura_mt.dicom_node.store import WorklistStore
from mura_mt.site.labels import SiteLabels
from mura_mt.site.window import REFRESH_S, still_current

RESAMPLES = 1000  # a page's intervals: enough for two decimals
PERIOD_S = REFRESH_S
MAX_WINDOWS = 32  # (window, source) pairs kept; the API may name any window, so the oldest are forgotten


@dataclass(frozen=True)
class Figures:
    metrics: dict  # the metrics.json dict (overall, parts, coverage, agreement, bootstrap, window)
    picture: str  # the reliability diagram as an <img> (empty without labels, or when not asked for)
    version: int
    computed: float


class SharedEvidence:
    def __init__(self, store: WorklistStore, resamples: int = RESAMPLES, period_s: float = PERIOD_S):
        self.store, self.labels = store, SiteLabels(store)
        self.resamples, self.period_s = resamples, period_s
        self._figures: OrderedDict[tuple, Figures] = OrderedDict()
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()
        self.computations = 0  # how many times figures were computed (the tests count them)

    def figures(self, days: float | None = None, since: float | None = None, until: float | None = None,
                source: str = "any", picture: bool = False) -> Figures:  # fmt: skip
        """The figures of the last ``days`` (from now) or of [since, until); LabelError for an unknown source."""
        key = (days, since, until, source, picture)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one computation per key at a time; the others wait for it and take its result
            version = self.store.version()
            with self._guard:
                known = self._figures.get(key)
            now = time.time()
            if known is not None and still_current(known.version, known.computed, version, now, self.period_s):
                return known
            start = now - days * 86400 if days is not None else since
            metrics, studies = self.labels.evidence(start, until, source, self.resamples, detail=False)
            drawn = _reliability(studies) if picture and len(studies) else ""
            made = Figures(metrics, drawn, version, time.time())  # the period counts from the figures' completion
            self.computations += 1
            with self._guard:
                self._figures[key] = made
                self._figures.move_to_end(key)
                while len(self._figures) > MAX_WINDOWS:
                    forgotten, _ = self._figures.popitem(last=False)
                    self._locks.pop(forgotten, None)
            return made


def _reliability(studies) -> str:
    from mura_mt.evaluation.site_report import reliability_figure

    png = reliability_figure(studies).png
    return f'<img alt="reliability" style="max-width:420px" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
