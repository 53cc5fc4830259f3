"""The DICOM triage node: python scripts/dicom_node.py --checkpoint CKPT --ae-title AET --port PORT --db FILE_OR_URL
--store-dir DIR --return-to AET@HOST:PORT [--dicomweb URL] [--quiet-seconds S] [--allow AET[@HOST],...]
[--host H] [--max-store-gb G] [--max-associations N] [--retain-hours H] [--runtime ...] [--precision ...]

Register it in the PACS (or Orthanc: "DicomModalities") as AET at this host and PORT, route studies to it, and let it
send to --return-to. It answers C-ECHO, receives studies by C-STORE (written durably before the success status),
analyses each study once nothing has arrived for --quiet-seconds (CR and DX views; other studies are "skipped"), and
sends back one RGB Secondary Capture per view (Grad-CAM overlay, burned-in verdict, "NOT FOR DIAGNOSTIC USE") and one
Comprehensive SR, in new series of the same study. The worklist (--db: a SQLite file, or a postgresql:// URL that
several nodes share) is its memory: stop it with Ctrl-C or kill -9 it at any point; started again, it analyses every
acknowledged study and delivers every answer, once. Nodes on one PostgreSQL never analyse a study twice.
Research software: not for diagnostic use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

from mura_mt.checkpoint import checkpoint_config
from mura_mt.dicom_node.delivery import Deliverer, Destination
from mura_mt.dicom_node.outputs import ModelIdentity
from mura_mt.dicom_node.receive import NodeSettings, StorageNode, parse_allow
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.dicom_node.studies import StudyWorker
from mura_mt.predictor import Predictor
from mura_mt.runtime import RUNTIMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hugging Face Hub repo id")
    parser.add_argument("--ae-title", required=True, help="this node's AE title (1-16 characters)")
    parser.add_argument("--port", type=int, required=True, help="DICOM port to listen on")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument(
        "--db", required=True, help="the worklist store: a SQLite file, or a postgresql:// URL shared by several nodes"
    )
    parser.add_argument("--store-dir", required=True, help="where received instances and outputs are written")
    parser.add_argument("--return-to", required=True, help="AET@HOST:PORT that receives the answers (C-STORE)")
    parser.add_argument("--dicomweb", default=None, help="also send the answers by STOW-RS to this DICOMweb URL")
    parser.add_argument(
        "--quiet-seconds", type=float, default=10.0, help="analyse a study this long after its last view"
    )
    parser.add_argument("--allow", default=None, help="calling AE titles allowed, AET[@HOST],... (default: any)")
    parser.add_argument("--max-store-gb", type=float, default=None, help="disk budget for received instances")
    parser.add_argument("--max-associations", type=int, default=8)
    parser.add_argument("--retain-hours", type=float, default=None, help="delete delivered studies' pixel data after")
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: env MURA_MT_RUNTIME, else auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        allow = parse_allow(args.allow)
        return_to = Destination.parse(args.return_to)
    except ValueError as err:
        parser.error(str(err))
    if not 1 <= len(args.ae_title) <= 16:
        parser.error("--ae-title must have 1 to 16 characters")

    store_dir = Path(args.store_dir)
    store = WorklistStore(args.db, node=args.ae_title)
    predictor = Predictor.from_pretrained(args.checkpoint, precision=args.precision, runtime=args.runtime)
    config = checkpoint_config(args.checkpoint)
    model = ModelIdentity(
        f"mura-mt {config['model']['backbone']} ({Path(str(args.checkpoint)).name})",
        config["weights_sha256"],
        args.ae_title,
    )
    budget = int(args.max_store_gb * 2**30) if args.max_store_gb else None
    settings = NodeSettings(args.ae_title, args.port, args.host, allow, budget, args.max_associations)
    receiver = StorageNode(settings, store, store_dir / "received")
    deliverer = Deliverer(store, args.ae_title, return_to, args.dicomweb)
    worker = StudyWorker(
        store, predictor, model, store_dir / "outbox", deliverer.destinations(), args.quiet_seconds,
        on_answer=deliverer.wake,
    )  # fmt: skip
    worker.warm_up()
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    receiver.start()
    worker.start()
    deliverer.start()
    print(f"mura-mt DICOM node {args.ae_title} on {args.host}:{args.port}, answers to {args.return_to}", flush=True)
    while not stopping.wait(60):
        if args.retain_hours is not None:
            removed = store.forget_pixels(time.time() - args.retain_hours * 3600)
            if removed:
                logging.info(f"deleted the received images of {removed} delivered studies (--retain-hours)")
    receiver.stop()
    worker.stop()
    deliverer.stop()
    store.close()


if __name__ == "__main__":
    main()
