"""The Storage SCP: a PACS or a modality sends studies here by C-STORE; nothing acknowledged is ever lost.

Accepts C-ECHO and C-STORE of every storage SOP class in every transfer syntax pynetdicom knows (a PACS routes whole
studies; which instances are analysed is decided later, by modality). For each instance, in this order:

1. refuse what cannot be a usable instance: no study or instance UID, an image whose header is damaged, whose size
   is absurd or whose uncompressed pixel data is shorter than its header says (status 0xC000, "cannot understand");
2. acknowledge without storing the node's own outputs (a PACS may route them back) and instances already received;
3. refuse with "out of resources" (0xA700) when the disk budget would be exceeded, rather than fill the disk, and
   while the worklist database cannot be reached (the sender tries again later);
4. write the file (temporary name, fsync, rename, fsync of the folder), then record it in the store, and only then
   answer success (0x0000).

A failure in one instance never takes the node down: the handler answers its status and the next one is served.
Calling AE titles (and, optionally, hosts) outside ``allow`` are refused: titles at association (A-ASSOCIATE-RJ),
hosts by an immediate abort. Association, DIMSE and network timeouts are set; at most ``max_associations`` at once.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from mura_mt.audit import AuditLog
from mura_mt.dicom_node.database import StoreUnavailable
from mura_mt.dicom_node.files import object_path, write_durably
from mura_mt.dicom_node.store import Instance, WorklistStore
from mura_mt.dicom_node.tls import TlsFiles, tls_association_server
from mura_mt.imaging.pixels import DEFAULT_LIMITS, InvalidImageError, check_geometry

logger = logging.getLogger(__name__)

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
OWN_MANUFACTURER = "mura-mt"  # what the node's outputs name as their equipment
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@dataclass(frozen=True)
class NodeSettings:
    ae_title: str
    port: int
    host: str = "127.0.0.1"
    allow: tuple[str, ...] = ()  # "AET" or "AET@HOST"; empty: anyone may associate
    max_store_bytes: int | None = None  # disk budget for received instances
    max_associations: int = 8
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0


def parse_allow(entries: str | None) -> tuple[str, ...]:
    """ "AET[@HOST],..." -> entries, checked for AE title length (16 characters) and emptiness."""
    parsed = []
    for entry in (entries or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        title = entry.split("@", 1)[0]
        if not title or len(title) > 16:
            raise ValueError(f"--allow entry {entry!r}: an AE title has 1 to 16 characters")
        parsed.append(entry)
    return tuple(parsed)


def is_own_output(dataset) -> bool:
    """True for objects the node itself made (the SC and SR it sends back), which it must never analyse."""
    for item in dataset.get("ContributingEquipmentSequence", []):
        if str(item.get("Manufacturer", "")) == OWN_MANUFACTURER:
            return True
    return str(dataset.get("SeriesDescription", "")).startswith("mura-mt")


class StorageNode:
    """A running Storage SCP that writes under ``store_dir`` and records in ``store``."""

    def __init__(self, settings: NodeSettings, store: WorklistStore, store_dir: str | Path, tls: TlsFiles | None = None,
                 audit: AuditLog | None = None):  # fmt: skip
        self.settings = settings
        self.store = store
        self.tls = tls
        self.audit = audit
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.store_dir, 0o700)  # received images carry patient data
        self._server = None

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        s = self.settings
        ae = AE(ae_title=s.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        titles = sorted({entry.split("@", 1)[0] for entry in s.allow})
        if titles:
            ae.require_calling_aet = titles
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = s.acse_timeout, s.dimse_timeout, s.network_timeout
        ae.maximum_associations = s.max_associations
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._check_host),
                    (evt.EVT_REJECTED, self._on_rejected)]  # fmt: skip
        if self.tls is None:
            self._server = ae.start_server((s.host, s.port), block=False, evt_handlers=handlers)
        else:
            self._server = ae.make_server(
                (s.host, s.port),
                ssl_context=self.tls.server_context(),
                evt_handlers=handlers,
                server_class=tls_association_server(),
            )
            self._server.on_refused = self._on_refused
            threading.Thread(target=self._server.serve_forever, name="mura-mt-dicom-tls", daemon=True).start()
        secure = " (DICOM TLS: peers need a certificate the CA signed)" if self.tls else ""
        logger.info(f"DICOM node {s.ae_title} listening on {s.host}:{s.port}{secure}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _check_host(self, event) -> None:
        """Entries with a host bind their AE title to it: the same title from elsewhere is aborted."""
        title = str(event.assoc.requestor.ae_title).strip()
        hosts = {e.split("@", 1)[1] for e in self.settings.allow if "@" in e and e.split("@", 1)[0] == title}
        if hosts and event.assoc.requestor.address not in hosts:
            logger.warning(f"refused {title} from {event.assoc.requestor.address}: not an allowed host")
            self._audit("association refused", event, detail="not an allowed host for this AE title")
            event.assoc.abort()

    def _on_rejected(self, event) -> None:
        """pynetdicom rejected the association (a calling AE title outside --allow, too many associations)."""
        self._audit("association refused", event, detail="A-ASSOCIATE-RJ")

    def _on_refused(self, address: str, reason: str) -> None:
        """A peer refused before any DICOM was spoken (the TLS handshake failed): it has no AE title yet."""
        if self.audit is not None:
            self.audit.record("association refused", "(no AE title)", address, detail=reason)

    def _audit(self, action: str, event, study_uid: str | None = None, detail: str = "") -> None:
        if self.audit is not None:
            requestor = event.assoc.requestor
            self.audit.record(action, str(requestor.ae_title).strip(), requestor.address, study_uid, detail)

    def _on_store(self, event) -> int:
        try:
            return self._store(event)
        except StoreUnavailable as err:  # transient: "out of resources" tells the sender to try again later
            logger.error(f"C-STORE refused: {err}")
            return OUT_OF_RESOURCES
        except Exception:  # never let one instance take the node down; the sender sees a failure status
            logger.exception("C-STORE failed")
            return CANNOT_UNDERSTAND

    def _store(self, event) -> int:
        import pydicom

        data = event.encoded_dataset(include_meta=True)
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=False)
            study_uid, sop_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
            if not study_uid or not sop_uid:
                raise InvalidImageError("no study or instance UID")
            _check_pixels(dataset)
        except Exception as err:  # damaged headers raise many types in pydicom
            logger.warning(f"refused an instance that cannot be used: {type(err).__name__}")
            return CANNOT_UNDERSTAND
        if is_own_output(dataset):
            return SUCCESS  # acknowledged, never analysed
        if self.store.instances_known([sop_uid]):
            return SUCCESS  # the same instance again changes nothing
        budget = self.settings.max_store_bytes
        if budget is not None and self.store.stored_bytes() + len(data) > budget:
            logger.warning("refused an instance: the disk budget for received images is used up")
            return OUT_OF_RESOURCES
        path = write_durably(object_path(self.store_dir, study_uid, sop_uid), data)
        self.store.add_instance(
            Instance(
                sop_uid=sop_uid,
                study_uid=study_uid,
                series_uid=str(dataset.get("SeriesInstanceUID", "")),
                sop_class=str(dataset.SOPClassUID),
                modality=str(dataset.get("Modality", "")),
                body_part=str(dataset.get("BodyPartExamined", "")),
                path=str(path),
                size=len(data),
                accession=str(dataset.get("AccessionNumber", "")),
                patient_id=str(dataset.get("PatientID", "")),
                patient_name=str(dataset.get("PatientName", "")),
            )
        )
        self._audit("instance received", event, study_uid, detail=sop_uid)
        return SUCCESS


def _check_pixels(dataset) -> None:
    """An image's size must be sane, and uncompressed pixel data as long as its header says."""
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if "PixelData" not in dataset:
        return  # an SR or another non-image object: stored as sent
    check_geometry(columns, rows, DEFAULT_LIMITS)
    if str(dataset.file_meta.TransferSyntaxUID) in UNCOMPRESSED:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples, bits = int(dataset.get("SamplesPerPixel", 1)), int(dataset.get("BitsAllocated", 16))
        expected = rows * columns * frames * samples * bits // 8
        if len(dataset.PixelData) < expected:
            raise InvalidImageError(f"pixel data is {len(dataset.PixelData)} bytes, the header needs {expected}")
