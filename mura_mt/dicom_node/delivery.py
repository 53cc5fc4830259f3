"""Delivery: every queued answer object goes to its destination, by C-STORE to ``--return-to`` (and by STOW-RS to
``--dicomweb``). A destination that is down keeps the object queued in the store and retried with backoff (1 s,
doubling, at most 5 min); after a restart the queue is still there. An object is marked delivered only after the
destination's success status, so a crash in between sends it once more, with the same SOP Instance UID: the PACS
keeps one copy (exactly once per answer, as the PACS sees it).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from mura_mt.audit import AuditLog
from mura_mt.dicom_node.loop import PassLoop
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.tls import TlsFiles

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """ "AET@HOST:PORT" -> Destination, with a clear error for anything else."""
        try:
            title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            destination = cls(title.strip(), host.strip(), int(port))
        except ValueError:
            raise ValueError(f"--return-to {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242") from None
        if not destination.ae_title or len(destination.ae_title) > 16 or not 0 < destination.port < 65536:
            raise ValueError(f"--return-to {text!r}: an AE title of 1-16 characters and a port 1-65535")
        return destination


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF_S, 2.0**attempts)


class Deliverer(PassLoop):
    """Sends due objects; ``run_once`` is one pass (the thread calls it every ``poll`` s, or at once on ``wake``)."""

    name = "mura-mt-delivery"

    def __init__(self, store: WorklistStore, calling_ae_title: str, return_to: Destination | None,
                 dicomweb_url: str | None = None, poll: float = 0.5, timeout: float = 30.0,
                 tls: TlsFiles | None = None, audit: AuditLog | None = None, metrics=None):  # fmt: skip
        """``metrics``: a ``monitoring.SiteMetrics`` that times last instance to delivered."""
        super().__init__()
        self.store, self.calling_ae_title = store, calling_ae_title
        self.return_to, self.dicomweb_url = return_to, dicomweb_url
        self.poll, self.timeout = poll, timeout
        self.tls = tls
        self.audit, self.metrics = audit, metrics
        # built once, reused by every batch: loading the certificate chain and the CA is not per-delivery work
        self._tls_context = tls.client_context() if tls else None
        self._http = self._session() if dicomweb_url else None

    def destinations(self) -> list[str]:
        return [name for name, there in (("dimse", self.return_to), ("stow", self.dicomweb_url)) if there]

    def run_once(self, now: float | None = None) -> int:
        """Send what is due; returns how many objects arrived."""
        now = time.time() if now is None else now
        due = self.store.due_deliveries(now)
        sent = 0
        for kind, send in (("dimse", self._c_store), ("stow", self._stow)):
            batch = [d for d in due if d["destination"] == kind]
            if batch:
                sent += send(batch, now)
        return sent

    def _fail(self, batch: list[dict], error: str, now: float) -> None:
        for item in batch:
            self.store.mark_failed_attempt(item["id"], error, now + backoff(item["attempts"]))
        logger.warning(f"delivery of {len(batch)} object(s) failed ({error}); retrying with backoff")

    def _c_store(self, batch: list[dict], now: float) -> int:
        import pydicom
        from pynetdicom import AE

        datasets = {item["id"]: pydicom.dcmread(item["path"]) for item in batch}
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for sop_class, syntax in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets.values()}:
            ae.add_requested_context(sop_class, syntax)
        there = self.return_to
        # With TLS the receiver must show a certificate the CA signed for the host named in --return-to
        tls_args = (self._tls_context, there.host) if self._tls_context else None
        association = ae.associate(there.host, there.port, ae_title=there.ae_title, tls_args=tls_args)
        if not association.is_established:
            self._fail(batch, f"could not associate with {there.ae_title}@{there.host}:{there.port}", now)
            return 0
        # pynetdicom leaves Nagle's algorithm on; with it off, 78 objects to Orthanc on loopback took 4.1 s instead
        # of 5.4 s (Orthanc's own ingest is ~30 ms an instance here, measured through its REST API).
        association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = 0
        try:
            for item in batch:
                status = association.send_c_store(datasets[item["id"]])
                code = int(status.Status) if "Status" in status else None
                if code in (0x0000, 0xB000, 0xB006, 0xB007):  # success, or success with warnings
                    self._sent(item, f"{there.ae_title}@{there.host}:{there.port}", self.store.mark_delivered(item["id"]))
                    sent += 1
                else:
                    self._fail([item], f"C-STORE status {code}", now)
        finally:
            association.release()
        return sent

    def _session(self):
        """HTTP for STOW-RS: with TLS files, an https:// receiver is verified against the CA and sees our
        certificate; without them, the system's trust store (plain requests)."""
        import requests

        session = requests.Session()
        if self.tls is not None:
            session.verify = str(self.tls.ca)
            session.cert = (str(self.tls.cert), str(self.tls.key))
            # requests prefers REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment over the session's CA (found
            # by the HTTPS test on a machine that sets them); the site's CA must win, the environment's proxies stay
            session.trust_env = False
            session.proxies = requests.utils.get_environ_proxies(self.dicomweb_url)
        return session

    def _stow(self, batch: list[dict], now: float) -> int:
        import pydicom
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(url=self.dicomweb_url, session=self._http)
        sent = 0
        for item in batch:
            try:
                client.store_instances([pydicom.dcmread(item["path"])])
            except Exception as err:  # requests' and the client's errors alike: retried later
                self._fail([item], f"STOW-RS: {type(err).__name__}: {str(err)[:200]}", now)
                continue
            self._sent(item, self.dicomweb_url, self.store.mark_delivered(item["id"]))
            sent += 1
        return sent

    def _sent(self, item: dict, where: str, last_instance: float | None) -> None:
        if last_instance is not None and self.metrics is not None:
            self.metrics.delivered_seconds.observe(max(0.0, time.time() - last_instance))
        if self.audit is not None:
            self.audit.record("answer sent", self.calling_ae_title, where, item["study_uid"], item["destination"])
