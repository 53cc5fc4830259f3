"""What the hospital's monitoring sees: one Prometheus registry (``SiteMetrics``) that the node and the app serve on
``--metrics-port``, and the drift monitor (``DriftMonitor``) that the Performance and Worklist tabs show.

Counts come from the worklist store at each scrape (so every process that serves the same store says the same
thing, and a restart loses nothing); the two latency histograms and the HL7 counters are this process's own. Nothing
here names a patient or a study: counts, rates and statistics only.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mura_mt.dicom_node.store import STATUSES, WorklistStore
from mura_mt.evaluation.drift import WINDOW_DAYS, WINDOW_STUDIES, check_drift
from mura_mt.inference.ood import WARNING as UNLIKE_TRAINING

logger = logging.getLogger(__name__)
ROLLING_DAYS = 30.0  # the rolling sensitivity and specificity


class DriftMonitor:
    """The last ``window_studies`` answers (at most ``window_days`` old) against the checkpoint's reference; the
    result is kept until the store changes. An alarm that starts or ends is logged."""

    def __init__(self, store: WorklistStore, reference: dict | None, window_studies: int = WINDOW_STUDIES,
                 window_days: float = WINDOW_DAYS):  # fmt: skip
        self.store, self.reference = store, reference
        self.window_studies, self.window_days = window_studies, window_days
        self._cached: tuple | None = None
        self._alarm = False
        self._lock = threading.Lock()

    def check(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        version = self.store.version()
        with self._lock:
            if self._cached is not None and self._cached[0] == version and now - self._cached[1] < 3600:
                return self._cached[2]
            since = now - self.window_days * 86400
            with self.store.db.transaction() as tx:
                rows = tx.rows(
                    "SELECT body_part, abnormal_prob, warnings FROM studies WHERE status IN ('analysed', 'delivered') "
                    "AND received >= ? ORDER BY received DESC LIMIT ?",
                    (since, self.window_studies),
                )
            result = check_drift(
                self.reference, [r["body_part"] for r in rows], [r["abnormal_prob"] for r in rows],
                [UNLIKE_TRAINING in (r["warnings"] or "") for r in rows],
                {"last_studies": self.window_studies, "last_days": self.window_days},
            )  # fmt: skip
            if result["alarm"] != self._alarm:
                self._alarm = result["alarm"]
                if self._alarm:
                    named = ", ".join(t["name"] for t in result["tests"] if t["alarm"])
                    logger.warning(f"drift alarm over the last {len(rows)} studies: {named}")
                else:
                    logger.info("the drift alarm has cleared")
            self._cached = (version, now, result)
            return result


class _StoreCollector(Collector):
    def __init__(self, store: WorklistStore, drift: DriftMonitor | None):
        self.store, self.drift = store, drift

    def collect(self):
        from mura_mt.dicom_node.labels import SiteLabels
        from mura_mt.evaluation.metrics import binary_metrics
        from mura_mt.evaluation.site import site_studies

        with self.store.db.transaction() as tx:
            instances = tx.value("SELECT COUNT(*) FROM instances")
            by_status = {r["status"]: r["n"] for r in tx.rows("SELECT status, COUNT(*) AS n FROM studies GROUP BY status")}
            labelled = tx.value("SELECT COUNT(DISTINCT study_uid) FROM labels WHERE superseded = 0 AND study_uid IS NOT NULL")
            pending = tx.value("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        yield CounterMetricFamily("mura_mt_instances_received", "Instances received by C-STORE", value=instances)
        studies = GaugeMetricFamily("mura_mt_studies", "Studies in the worklist by status", labels=["status"])
        for status in STATUSES:
            studies.add_metric([status], by_status.get(status, 0))
        yield studies
        yield GaugeMetricFamily("mura_mt_studies_analysed", "Studies answered (analysed or delivered)",
                                value=by_status.get("analysed", 0) + by_status.get("delivered", 0))  # fmt: skip
        yield GaugeMetricFamily("mura_mt_labelled_studies", "Studies with a current label", value=labelled)
        yield GaugeMetricFamily("mura_mt_deliveries_pending", "Objects waiting to be sent", value=pending)
        yield GaugeMetricFamily("mura_mt_queue_depth", "Studies receiving or waiting for analysis",
                                value=by_status.get("receiving", 0) + by_status.get("waiting", 0))  # fmt: skip
        rows = SiteLabels(self.store).labelled_answers(since=time.time() - ROLLING_DAYS * 86400)
        rolling = binary_metrics(None, site_studies(rows)) if rows else {}
        for name in ("sensitivity", "specificity"):
            value = rolling.get(name)
            yield GaugeMetricFamily(f"mura_mt_rolling_{name}", f"{name.capitalize()} over the labelled answers of the "
                                    f"last {ROLLING_DAYS:.0f} days (NaN without labels)",
                                    value=float("nan") if value is None else value)  # fmt: skip
        if self.drift is not None:
            drift = self.drift.check()
            p_values = GaugeMetricFamily("mura_mt_drift_p_value", "Drift tests' p-values", labels=["test"])
            statistics = GaugeMetricFamily("mura_mt_drift_statistic", "Drift tests' statistics", labels=["test"])
            alarms = GaugeMetricFamily("mura_mt_drift_alarm", "1 where a drift test alarms", labels=["test"])
            for test in drift["tests"]:
                p_values.add_metric([test["name"]], test["p_value"])
                statistics.add_metric([test["name"]], test["statistic"])
                alarms.add_metric([test["name"]], float(test["alarm"]))
            yield p_values
            yield statistics
            yield alarms


class SiteMetrics:
    """The registry a node or an app serves; ``hl7_message`` is the HL7 listener's ``on_message``."""

    def __init__(self, store: WorklistStore, drift: DriftMonitor | None = None):
        self.registry = CollectorRegistry()
        self.hl7_messages = Counter("mura_mt_hl7_messages", "HL7 messages by outcome", ["outcome"],
                                    registry=self.registry)  # fmt: skip
        for outcome in ("accepted", "rejected"):
            self.hl7_messages.labels(outcome)
        buckets = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
        self.analysis_seconds = Histogram("mura_mt_analysis_seconds", "Time to analyse one study",
                                          buckets=buckets, registry=self.registry)  # fmt: skip
        self.delivered_seconds = Histogram("mura_mt_last_instance_to_delivered_seconds",
                                           "From a study's last instance to its answer delivered", buckets=buckets,
                                           registry=self.registry)  # fmt: skip
        self.registry.register(_StoreCollector(store, drift))
        self._server = None

    def hl7_message(self, outcome: str) -> None:
        self.hl7_messages.labels(outcome).inc()

    def serve(self, port: int, host: str = "127.0.0.1", public: bool = False) -> None:
        """Serve ``/metrics`` on ``host:port``; off loopback only with ``public`` (counts only, but the operator
        says so)."""
        if not public and not _is_loopback(host):
            raise ValueError(f"--metrics-host {host} is off loopback: add --metrics-public (the endpoint has no login; "
                             "it serves counts only, no patient data)")  # fmt: skip
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        logger.info(f"Prometheus metrics on http://{host}:{port}/metrics")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def add_metrics_options(parser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (default loopback)")
    parser.add_argument("--metrics-public", action="store_true", help="allow /metrics off loopback (counts only)")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
