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

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mura_mt.access.gate import Access
from mura_mt.access.roles import METRICS
from mura_mt.dicom_node.store import STATUSES, WorklistStore
from mura_mt.evaluation.drift import WINDOW_DAYS, WINDOW_STUDIES, check_drift
from mura_mt.inference.ood import WARNING as UNLIKE_TRAINING
from mura_mt.site.window import REFRESH_S, still_current

logger = logging.getLogger(__name__)
ROLLING_DAYS = 30.0  # the rolling sensitivity and specificity
PERIOD_S = REFRESH_S  # the drift check and the scrape's store counts are computed again at most this often
MAX_AGE_S = 3600.0  # and at least this often: the windows move with the clock


class DriftMonitor:
    """The last ``window_studies`` answers (at most ``window_days`` old) against the checkpoint's reference; the
    result is kept until the store changes, and for at least ``period_s`` (a study every 2 s must not mean a check
    every 2 s for every open page). An alarm that starts or ends is logged."""

    def __init__(self, store: WorklistStore, reference: dict | None, window_studies: int = WINDOW_STUDIES,
                 window_days: float = WINDOW_DAYS, period_s: float = PERIOD_S):  # fmt: skip
        self.store, self.reference = store, reference
        self.window_studies, self.window_days, self.period_s = window_studies, window_days, period_s
        self._cached: tuple | None = None
        self._alarm = False
        self._lock = threading.Lock()

    def check(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        version = self.store.version()
        with self._lock:
            if self._cached is not None:
                cached_version, computed, result = self._cached
                if still_current(cached_version, computed, version, now, self.period_s, MAX_AGE_S):
                    return result
            since = now - self.window_days * 86400
            with self.store.db.transaction() as tx:
                rows = tx.rows(
                    f"SELECT body_part, abnormal_prob, warnings FROM studies{tx.indexed_by('studies_answered')} "
                    "WHERE status IN ('analysed', 'delivered') AND received >= ? ORDER BY received DESC LIMIT ?",
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
    """The store's counts, read again when the store changed (and at most every ``PERIOD_S``: the counts of a
    million studies take a tenth of a second, a scrape comes every 15 s); the rolling sensitivity and specificity are
    counted in the database over the last 30 days' labelled answers (the window's rows, never the year's)."""

    def __init__(self, store: WorklistStore, drift: DriftMonitor | None):
        self.store, self.drift = store, drift
        self._snapshot: tuple | None = None
        self._lock = threading.Lock()

    def _counts(self) -> dict:
        now, version = time.time(), self.store.version()
        with self._lock:
            if self._snapshot is not None:
                seen, computed, counts = self._snapshot
                if still_current(seen, computed, version, now, PERIOD_S, MAX_AGE_S):
                    return counts
            with self.store.db.transaction() as tx:
                counts = {
                    "instances": tx.value("SELECT COUNT(*) FROM instances"),
                    "by_status": {r["status"]: r["n"] for r in
                                  tx.rows("SELECT status, COUNT(*) AS n FROM studies GROUP BY status")},  # fmt: skip
                    "labelled": tx.value("SELECT COUNT(*) FROM labels WHERE superseded = 0 AND study_uid IS NOT NULL"),
                    "pending": tx.value(f"SELECT COUNT(*) FROM deliveries{tx.indexed_by('deliveries_pending')} "
                                        "WHERE state = 'pending'"),
                    "cells": {(r["label"], r["is_abnormal"]): r["n"] for r in tx.rows(
                        f"SELECT l.label, s.is_abnormal, COUNT(*) AS n FROM studies s"
                        f"{tx.indexed_by('studies_answered')} JOIN labels l ON l.study_uid = s.study_uid "
                        "WHERE s.received >= ? AND s.status IN ('analysed', 'delivered') AND l.superseded = 0 "
                        "GROUP BY l.label, s.is_abnormal",
                        (now - ROLLING_DAYS * 86400,))},  # fmt: skip
                }
            self._snapshot = (version, now, counts)
            return counts

    def collect(self):
        counts = self._counts()
        instances, by_status, labelled = counts["instances"], counts["by_status"], counts["labelled"]
        pending, cells = counts["pending"], counts["cells"]
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
        positives, negatives = cells.get((1, 1), 0) + cells.get((1, 0), 0), cells.get((0, 0), 0) + cells.get((0, 1), 0)
        rolling = {"sensitivity": cells.get((1, 1), 0) / positives if positives else None,
                   "specificity": cells.get((0, 0), 0) / negatives if negatives else None}  # fmt: skip
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

    def serve(self, port: int, host: str = "127.0.0.1", public: bool = False, access: Access | None = None,
              tls=None) -> None:  # fmt: skip
        """Serve ``/metrics`` on ``host:port``. With ``access`` (a users file), only a ``monitor`` user's HTTP basic
        auth is answered (failures throttled and audited as the app's logins are); without one, off loopback only
        with ``public`` (counts only, but the operator says so). ``tls`` (``dicom_node.tls.TlsFiles``): HTTPS with
        the node's certificate, so the basic auth never crosses the network in clear."""
        from wsgiref.simple_server import make_server

        from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

        login = access is not None and access.users is not None
        if not public and not login and not _is_loopback(host):
            raise ValueError(f"--metrics-host {host} is off loopback: add --metrics-public (the endpoint has no login "
                             "without --auth-file; it serves counts only, no patient data)")  # fmt: skip
        app = make_wsgi_app(self.registry)
        if login:
            app = _basic_auth(app, access)
        self._server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_quiet_handler())
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(tls.cert, tls.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, name="mura-mt-metrics", daemon=True).start()
        scheme = "https" if tls is not None else "http"
        logger.info(f"Prometheus metrics on {scheme}://{host}:{port}/metrics"
                    f"{' (monitor users only)' if login else ''}")  # fmt: skip

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _basic_auth(app, access: Access):
    """Answer only requests with a ``monitor`` user's HTTP basic auth; 401 (with the challenge) otherwise, 429 while
    the user or the address is locked out. Successful scrapes are not audited (one every 15 s says nothing)."""
    import base64
    import binascii

    def guarded(environ, start_response):
        address = environ.get("REMOTE_ADDR")
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, encoded = header.partition(" ")
        user = password = None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = None
        if user is None:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="mura-mt metrics"'),
                                                ("Content-Type", "text/plain")])  # fmt: skip
            return [b"/metrics needs a monitor user's basic auth\n"]
        outcome = access.authenticate(user, password, address, what="/metrics")
        if outcome.account is None:
            if outcome.retry_after_s > 0:
                start_response("429 Too Many Requests", [("Retry-After", str(int(outcome.retry_after_s + 0.999))),
                                                         ("Content-Type", "text/plain")])  # fmt: skip
            else:
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="mura-mt metrics"'),
                                                    ("Content-Type", "text/plain")])  # fmt: skip
            return [outcome.message.encode() + b"\n"]
        from mura_mt.access.gate import Identity

        refused = access.refusal(Identity(outcome.account.name, outcome.account.roles, "login"), METRICS, address,
                                 "/metrics")  # fmt: skip
        if refused:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [refused.encode() + b"\n"]
        return app(environ, start_response)

    return guarded


def _quiet_handler():
    from wsgiref.simple_server import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # a scrape every 15 s is not news
            pass

    return Quiet


def add_metrics_options(parser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (default loopback)")
    parser.add_argument("--metrics-public", action="store_true", help="allow /metrics off loopback (counts only)")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
