"""What a process that serves a worklist runs beside it: the store, the audit trail, the drift monitor, the metrics,
and the services the options ask for (the DICOM node, the HL7 listener, /metrics). ``app.py`` and
``scripts/dicom_node.py`` both start theirs with ``start_site``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mura_mt.access.gate import Access
from mura_mt.access.users import Users
from mura_mt.audit import AuditLog, default_audit_path
from mura_mt.dicom_node.node import DicomNode, NodeOptions
from mura_mt.dicom_node.outputs import ModelIdentity
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.tls import TlsFiles
from mura_mt.evaluation.drift import load_reference
from mura_mt.site.hl7_listener import listener_from_args
from mura_mt.site.monitoring import DriftMonitor, SiteMetrics


@dataclass
class Site:
    """What a process that serves a worklist runs beside it: the store, the audit trail, the drift monitor, the
    metrics, and the services started (the node, the HL7 listener, the metrics server) to ``stop``."""

    store: WorklistStore
    audit: AuditLog
    drift: DriftMonitor
    metrics: SiteMetrics
    services: list

    def stop(self) -> None:
        for service in self.services:
            service.stop()


def start_site(args, node_options: NodeOptions | None, predictor, checkpoint, audit: AuditLog | None = None,
               store: WorklistStore | None = None, access: Access | None = None) -> Site:  # fmt: skip
    """Start what the options ask for around the worklist ``args.worklist_db``: the node (``node_options``), the
    HL7 listener (--hl7-port, over TLS with --hl7-tls) and /metrics (--metrics-port; a ``monitor`` user's basic auth
    when ``access`` has a users file or --auth-file names one, HTTPS with the --tls-* files). ValueError,
    ConnectionError or RuntimeError say why not."""
    store = store or WorklistStore(args.worklist_db, node=node_options.ae_title if node_options else "app")
    audit = audit or AuditLog(args.audit_log or default_audit_path(args.store_dir, args.worklist_db),
                              int(args.audit_max_mb * 2**20))  # fmt: skip
    drift = DriftMonitor(store, load_reference(checkpoint if Path(str(checkpoint)).is_dir() else None,
                                                 predictor.runtime))
    metrics = SiteMetrics(store, drift)
    services: list = []
    if node_options is not None:
        services.append(DicomNode(node_options, store, predictor, ModelIdentity.of(checkpoint, node_options.ae_title),
                                  audit, metrics))  # fmt: skip
    hl7 = listener_from_args(args, store, audit, metrics.hl7_message)
    if hl7 is not None:
        services.append(hl7)
    for service in services:
        service.start()
    if args.metrics_port is not None:
        if access is None and getattr(args, "auth_file", None):
            access = Access(Users.load(args.auth_file))
        if access is not None and access.audit is None:
            access.audit = audit
        metrics.serve(args.metrics_port, args.metrics_host, args.metrics_public, access, TlsFiles.from_args(args))
        services.append(metrics)
    return Site(store, audit, drift, metrics, services)
