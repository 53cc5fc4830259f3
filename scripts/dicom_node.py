"""The DICOM triage node: python scripts/dicom_node.py --checkpoint CKPT --ae-title AET --port PORT --db FILE_OR_URL
--store-dir DIR --return-to AET@HOST:PORT [--dicomweb URL] [--quiet-seconds S] [--allow AET[@HOST],...]
[--host H] [--max-store-gb G] [--max-associations N] [--retain-hours H] [--runtime ...] [--precision ...]
[--tls-cert FILE --tls-key FILE --tls-ca FILE] [--audit-log FILE] [--hl7-port PORT [--hl7-allow APP[@HOST],...]
[--hl7-labels FILE.yaml] [--hl7-tls]] [--metrics-port PORT [--metrics-host H] [--metrics-public] [--auth-file FILE]]

Register it in the PACS (or Orthanc: "DicomModalities") as AET at this host and PORT, route studies to it, and let it
send to --return-to. It answers C-ECHO, receives studies by C-STORE (written durably before the success status),
analyses each study once nothing has arrived for --quiet-seconds (CR and DX views; other studies are "skipped"), and
sends back one RGB Secondary Capture per view (Grad-CAM overlay, burned-in verdict, "NOT FOR DIAGNOSTIC USE") and one
TID 1500 Measurement Report (IHE AI Results), in new series of the same study. With --tls-* it speaks only DICOM TLS,
both ways, with peers whose certificate the CA signed; --audit-log (default audit.jsonl in --store-dir) records
every instance received, answer sent and association refused. The worklist (--db: a SQLite file, or a postgresql:// URL that
several nodes share) is its memory: stop it with Ctrl-C or kill -9 it at any point; started again, it analyses every
acknowledged study and delivers every answer, once. Nodes on one PostgreSQL never analyse a study twice; the web app
shows their worklist (python app.py --worklist-db URL). With --hl7-port it also takes the RIS's final reports (HL7
ORU^R01 over MLLP) as the studies' labels (mura_mt.site.hl7_listener); with --metrics-port it serves Prometheus
/metrics (counts, latencies, rolling accuracy, drift; mura_mt.site.monitoring). Research software: not for diagnostic use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from mura_mt.site.hl7_listener import add_hl7_options
from mura_mt.site.monitoring import add_metrics_options
from mura_mt.dicom_node.node import NodeOptions, add_node_options
from mura_mt.site.services import start_site
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.runners import RUNTIMES
from mura_mt.scratch import sweep_orphans


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    parser.add_argument("--ae-title", required=True, help="this node's AE title (1-16 characters)")
    parser.add_argument("--port", type=int, required=True, help="DICOM port to listen on")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument(
        "--db", required=True, help="the worklist store: a SQLite file, or a postgresql:// URL shared by several nodes"
    )
    add_node_options(parser)
    add_hl7_options(parser)
    add_metrics_options(parser)
    parser.add_argument("--auth-file", default=None,
                        help="the users file (scripts/users.py): /metrics then answers its monitor users only")  # fmt: skip
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: env MURA_MT_RUNTIME, else auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args(argv)
    sweep_orphans()  # what killed runs left in TMPDIR
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        options = NodeOptions.from_args(args, args.ae_title, args.port, args.host, args.db)
        store = WorklistStore(args.db, node=args.ae_title)
    except (ValueError, ConnectionError, RuntimeError) as err:
        parser.error(str(err))
    predictor = Predictor.from_pretrained(args.checkpoint, precision=args.precision, runtime=args.runtime)
    args.worklist_db = args.db
    try:
        site = start_site(args, options, predictor, args.checkpoint, store=store)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"mura-mt DICOM node {args.ae_title} on {args.host}:{args.port}, answers to {args.return_to}", flush=True)
    while not stopping.wait(1):
        pass
    site.stop()
    store.close()


if __name__ == "__main__":
    main()
