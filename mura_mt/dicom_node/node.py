"""A whole node, assembled: receiver, study worker and deliverer around one store and one Predictor, plus the
retention sweep. ``scripts/dicom_node.py`` runs one alone; ``app.py --dicom-port`` runs one beside the web app,
sharing the app's Predictor. Both take the same options (``add_node_options``); ``site.services.start_site`` starts it
with the site's other services."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mura_mt.audit import MAX_MB, AuditLog
from mura_mt.dicom_node.delivery import Deliverer, Destination
from mura_mt.dicom_node.outputs import ModelIdentity
from mura_mt.dicom_node.receive import NodeSettings, StorageNode, parse_allow
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.studies import StudyWorker
from mura_mt.dicom_node.tls import TlsFiles, add_tls_options

logger = logging.getLogger(__name__)


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """The options a node has wherever it runs (its AE title, port and store are named by the caller)."""
    parser.add_argument("--store-dir", default=None, help="where received instances and outputs are written")
    parser.add_argument("--return-to", default=None, help="AET@HOST:PORT that receives the answers (C-STORE)")
    parser.add_argument("--dicomweb", default=None, help="also send the answers by STOW-RS to this DICOMweb URL")
    parser.add_argument(
        "--quiet-seconds", type=float, default=10.0, help="analyse a study this long after its last view"
    )
    parser.add_argument("--allow", default=None, help="calling AE titles allowed, AET[@HOST],... (default: any)")
    parser.add_argument("--max-store-gb", type=float, default=None, help="disk budget for received instances")
    parser.add_argument("--max-associations", type=int, default=8)
    parser.add_argument("--retain-hours", type=float, default=None, help="delete delivered studies' pixel data after")
    parser.add_argument("--no-presentation-states", dest="presentation_states", action="store_false",
                        help="send no Grayscale Softcopy Presentation State (the region drawn on each view)")  # fmt: skip
    add_tls_options(parser)
    parser.add_argument(
        "--audit-log",
        default=None,
        help="who did what to which study, JSON lines (default: audit.jsonl in --store-dir)",
    )
    parser.add_argument("--audit-max-mb", type=_positive_mb, default=MAX_MB,
                        help=f"rotate the audit log beside itself past this size (default {MAX_MB:g}; fractions allowed)")  # fmt: skip


def _positive_mb(text: str) -> float:
    """A size in MB (fractions allowed), refused at parsing when it is not a positive number."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, got {text!r}")
    return value


@dataclass(frozen=True)
class NodeOptions:
    """What a node needs besides its store and Predictor; ``from_args`` checks them (ValueError says what is wrong)."""

    ae_title: str
    port: int
    host: str
    store_dir: Path
    return_to: Destination | None
    dicomweb: str | None = None
    quiet_seconds: float = 10.0
    allow: tuple[str, ...] = ()
    max_store_gb: float | None = None
    max_associations: int = 8
    retain_hours: float | None = None
    tls: TlsFiles | None = None
    audit_log: Path | None = None  # None: audit.jsonl in store_dir
    audit_max_mb: float = MAX_MB
    presentation_states: bool = True  # a GSPS per view with its region of evidence, beside the SCs and the SR

    @classmethod
    def from_args(cls, args, ae_title: str, port: int, host: str, db: str) -> NodeOptions:
        if not 1 <= len(ae_title) <= 16:
            raise ValueError("the AE title must have 1 to 16 characters")
        if args.return_to is None and args.dicomweb is None:
            raise ValueError("a node needs somewhere to send its answers: --return-to AET@HOST:PORT or --dicomweb URL")
        if args.store_dir is None:
            raise ValueError("--store-dir is required: the folder for received instances and the node's outputs")
        return cls(
            ae_title=ae_title,
            port=port,
            host=host,
            store_dir=Path(args.store_dir),
            return_to=Destination.parse(args.return_to) if args.return_to else None,
            dicomweb=args.dicomweb,
            quiet_seconds=args.quiet_seconds,
            allow=parse_allow(args.allow),
            max_store_gb=args.max_store_gb,
            max_associations=args.max_associations,
            retain_hours=args.retain_hours,
            tls=TlsFiles.from_args(args),
            audit_log=Path(args.audit_log) if args.audit_log else None,
            audit_max_mb=args.audit_max_mb,
            presentation_states=args.presentation_states,
        )


class DicomNode:
    """Receiver, study worker, deliverer and retention sweep; ``start`` and ``stop`` them together."""

    def __init__(self, options: NodeOptions, store: WorklistStore, predictor, model: ModelIdentity,
                 audit: AuditLog | None = None, metrics=None):  # fmt: skip
        """``audit``: the trail to write (the app shares its own); by default the options' file. ``metrics``: a
        ``monitoring.SiteMetrics`` that times the analyses and deliveries."""
        self.options, self.store = options, store
        o = options
        self.audit = audit or AuditLog(o.audit_log or o.store_dir / "audit.jsonl", int(o.audit_max_mb * 2**20))
        budget = int(o.max_store_gb * 2**30) if o.max_store_gb else None
        settings = NodeSettings(o.ae_title, o.port, o.host, o.allow, budget, o.max_associations)
        self.receiver = StorageNode(settings, store, o.store_dir / "received", tls=o.tls, audit=self.audit)
        self.deliverer = Deliverer(store, o.ae_title, o.return_to, o.dicomweb, tls=o.tls, audit=self.audit,
                                   metrics=metrics)  # fmt: skip
        self.worker = StudyWorker(
            store, predictor, model, o.store_dir / "outbox", self.deliverer.destinations(), o.quiet_seconds,
            on_answer=self.deliverer.wake, metrics=metrics, presentation_states=o.presentation_states,
        )  # fmt: skip
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        self.worker.warm_up()
        self.receiver.start()
        self.worker.start()
        self.deliverer.start()
        if self.options.retain_hours is not None:
            self._sweeper = threading.Thread(target=self._sweep, name="mura-mt-retention", daemon=True)
            self._sweeper.start()
        o = self.options
        where = f"{o.return_to.ae_title}@{o.return_to.host}:{o.return_to.port}" if o.return_to else o.dicomweb
        secure = ", DICOM TLS" if o.tls else ""
        logger.info(
            f"mura-mt DICOM node {o.ae_title} on {o.host}:{o.port}{secure}, answers to {where}, "
            f"worklist {self.store.db}, audit log {self.audit.path}"
        )

    def stop(self) -> None:
        self._stop.set()
        self.receiver.stop()
        self.worker.stop()
        self.deliverer.stop()

    def _sweep(self) -> None:
        while not self._stop.wait(60):
            try:
                removed = self.store.forget_pixels(time.time() - self.options.retain_hours * 3600)
            except Exception:  # the store may be briefly unreachable; the next sweep tries again
                logger.exception("the retention sweep failed")
                continue
            if removed:
                logger.info(f"deleted the received images of {removed} delivered studies (--retain-hours)")
