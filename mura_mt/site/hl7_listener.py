"""The RIS's final reports, by HL7 v2 over MLLP: ORU^R01 in, a label in the worklist store, an ACK out.

The listener (``--hl7-port``) takes ORU^R01 messages whose results are final or corrected (OBR-25 ``F`` or ``C``).
Each order (OBR with its OBX) gives one label: from the OBX abnormal flags (OBX-8 ``N`` normal; ``A``, ``AA``,
``H``, ``HH``, ``L``, ``LL`` abnormal), else from the site's mapping (``--hl7-labels FILE.yaml``: coded OBX-5
values and patterns of the report text), for RIS systems that leave OBX-8 empty. The study is found by accession
number (OBR-3, else OBR-18, else ORC-3) or by a Study Instance UID in the message (an OBX coded DCM 113014, or
IHE's ZDS-1). The ACK is ``AA`` once every label of the message is durable; ``AR`` for what cannot be read
(garbage, not ORU^R01, a sender not allowed) and ``AE`` for what cannot be used (not final, no label derivable, no
study), with the reason in MSA-3. The same message again (MSH-10) changes nothing; a report before its study is kept
(``labels.SiteLabels``). Parsing is hl7apy's; the MLLP framing and the ACK are written here, so the tests can send
with another library (python-hl7's ``mllp_send``).
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mura_mt.audit import AuditLog
from mura_mt.site.labels import LabelError, SiteLabels, parse_label
from mura_mt.dicom_node.tls import TlsFiles

logger = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\r"  # MLLP: <VT> message <FS><CR>
MAX_MESSAGE_BYTES = 1 << 20  # a radiology report is a few kB; more is not a report
IDLE_TIMEOUT_S = 120.0
ABNORMAL_FLAGS = {"A", "AA", "H", "HH", "L", "LL"}
FINAL_STATUSES = {"F", "C"}
STUDY_UID_CODE = "113014"  # DCM "Study Instance UID"


class Hl7Error(ValueError):
    """A message, or one order in it, that cannot be used; ``code`` is the ACK's (AR: unreadable, AE: unusable)."""

    def __init__(self, message: str, code: str = "AE", facts: dict | None = None):
        super().__init__(message)
        self.code, self.facts = code, facts or {}


def add_hl7_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hl7-port", type=int, default=None, help="take the RIS's final reports (ORU^R01, MLLP)")
    parser.add_argument("--hl7-host", default="0.0.0.0", help="address the HL7 listener binds (default: all)")
    parser.add_argument(
        "--hl7-allow", default=None, help="sending applications allowed, APP[@HOST],... (MSH-3, peer; default: any)"
    )
    parser.add_argument(
        "--hl7-labels", default=None, help="YAML: coded OBX-5 values and report-text patterns -> abnormal / normal"
    )
    parser.add_argument("--hl7-tls", action="store_true",
                        help="MLLP over TLS only, with the --tls-* files (the RIS shows a certificate the CA signed)")  # fmt: skip


@dataclass(frozen=True)
class LabelRules:
    """The site's mapping for reports without OBX-8: ``codes`` (OBX-5's first component -> 0/1) and ``patterns``
    (regular expressions over the report text, case-insensitive, the first that matches wins)."""

    codes: dict[str, int] = field(default_factory=dict)
    patterns: tuple[tuple[re.Pattern, int], ...] = ()

    @classmethod
    def load(cls, path: str | Path | None) -> LabelRules:
        """Read ``codes: {CODE: abnormal|normal}`` and ``patterns: [{pattern: REGEX, label: abnormal|normal}]``."""
        if path is None:
            return cls()
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict) or set(raw) - {"codes", "patterns"}:
            raise ValueError(f"{path}: expected a mapping with 'codes' and/or 'patterns'")
        try:
            codes = {str(code).strip().upper(): parse_label(label) for code, label in (raw.get("codes") or {}).items()}
            patterns = tuple(
                (re.compile(str(rule["pattern"]), re.IGNORECASE), parse_label(rule["label"]))
                for rule in raw.get("patterns") or []
            )
        except (LabelError, KeyError, TypeError, re.error) as err:
            raise ValueError(f"{path}: {err}") from err
        return cls(codes, patterns)

    def label(self, coded: list[str], text: str) -> int | None:
        for code in coded:
            if code.upper() in self.codes:
                return self.codes[code.upper()]
        for pattern, value in self.patterns:
            if pattern.search(text):
                return value
        return None


@dataclass
class Order:
    """One OBR of an ORU^R01, with what identifies its study and what its OBX say."""

    index: int
    accession: str = ""
    study_uid: str = ""
    status: str = ""
    author: str = ""
    flags: list[str] = field(default_factory=list)
    coded: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _field(segment, number: int, component: int | None = None) -> str:
    """ER7 text of field ``number`` of an hl7apy segment (its first repetition), '' when absent."""
    wanted = f"{segment.name}_{number}"
    text = next((child.to_er7() for child in segment.children if child.name == wanted), "")
    text = text.split("~", 1)[0]
    if component is not None:
        parts = text.split("^")
        text = parts[component - 1] if len(parts) >= component else ""
    return text.strip()


def parse_orders(text: str) -> tuple[dict, list[Order]]:
    """The MSH facts (``control_id``, ``sending_app``, ``sending_facility``, ``type``) and the orders of a message;
    Hl7Error (AR) when it is not a readable ORU^R01."""
    from hl7apy.parser import parse_message

    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise Hl7Error("not an HL7 v2 message: it does not start with MSH", "AR")
    try:
        message = parse_message(text, find_groups=False)
    except Exception as err:  # hl7apy raises many kinds; every one means the same to the sender
        raise Hl7Error(f"malformed HL7: {err}", "AR") from err
    msh = message.msh
    facts = {
        "control_id": _field(msh, 10),
        "sending_app": _field(msh, 3, 1),
        "sending_facility": _field(msh, 4, 1),
        "type": "^".join(_field(msh, 9).split("^")[:2]),
    }
    if facts["type"] != "ORU^R01":
        raise Hl7Error(f"message type {facts['type'] or '(none)'} is not accepted; send ORU^R01", "AR", facts)
    if not facts["control_id"]:
        raise Hl7Error("MSH-10 (message control id) is empty", "AR", facts)
    orders: list[Order] = []
    placer = ""  # ORC-3 of the ORC before the OBR
    study_uid = ""  # IHE ZDS-1 names the study for the whole message
    for segment in message.children:
        name = segment.name
        if name == "ZDS":
            study_uid = segment.to_er7().split("|")[1].split("^")[0].strip() if "|" in segment.to_er7() else ""
        elif name == "ORC":
            placer = _field(segment, 3, 1)
        elif name == "OBR":
            orders.append(
                Order(
                    index=len(orders) + 1,
                    accession=_field(segment, 3, 1) or _field(segment, 18, 1) or placer,
                    status=_field(segment, 25).upper(),
                    author=_field(segment, 32, 1).replace("&", " ").strip(),
                )
            )
        elif name == "OBX":
            if not orders:
                raise Hl7Error("an OBX before any OBR", "AR", facts)
            order = orders[-1]
            value = _field(segment, 5)
            if _field(segment, 3, 1) == STUDY_UID_CODE:
                order.study_uid = value.split("^")[0]
                continue
            if flag := _field(segment, 8).upper():
                order.flags.append(flag)
            if _field(segment, 2).upper() in ("CE", "CWE", "CNE", "CF"):
                order.coded.append(value.split("^")[0].strip())
            elif value:
                order.text.append(value.replace("\\.br\\", " ").replace("^", " "))
    for order in orders:
        order.study_uid = order.study_uid or study_uid
    if not orders:
        raise Hl7Error("an ORU^R01 without an OBR: no result to take", "AR", facts)
    return facts, orders


def order_label(order: Order, rules: LabelRules) -> int:
    """1 abnormal / 0 normal for one order; Hl7Error (AE) with the reason when none can be derived."""
    if order.status not in FINAL_STATUSES:
        raise Hl7Error(f"OBR {order.index}: result status {order.status or '(empty)'} is not final (F) or corrected (C)")
    if not (order.accession or order.study_uid):
        raise Hl7Error(f"OBR {order.index}: no accession number (OBR-3, OBR-18, ORC-3) and no Study Instance UID")
    if any(flag in ABNORMAL_FLAGS for flag in order.flags):
        return 1
    if "N" in order.flags:
        return 0
    value = rules.label(order.coded, " ".join(order.text))
    if value is None:
        raise Hl7Error(
            f"OBR {order.index}: no label derivable: no OBX-8 abnormal flag (N, A, AA, H, HH, L, LL) and no "
            "--hl7-labels rule matched"
        )
    return value


def ack(facts: dict, code: str, text: str = "") -> bytes:
    """An HL7 v2.5 ACK, MLLP-framed, answering ``facts`` (MSH-10 echoed in MSA-2)."""
    escapes = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": " ", "\n": " "}
    clean = "".join(escapes.get(char, char) for char in text[:200])  # HL7's escape sequences
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    segments = [
        f"MSH|^~\\&|MURA-MT|MURA-MT|{facts.get('sending_app', '')}|{facts.get('sending_facility', '')}|{stamp}||"
        f"ACK^R01^ACK|ACK{time.time_ns()}|P|2.5",
        f"MSA|{code}|{facts.get('control_id', '')}|{clean}",
    ]
    return START + "\r".join(segments).encode() + b"\r" + END


def _allowed(allow: tuple[str, ...], app: str, host: str) -> bool:
    if not allow:
        return True
    for entry in allow:
        name, _, where = entry.partition("@")
        if name == app and (not where or where == host):
            return True
    return False


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # a restarted node binds its port again at once
    daemon_threads = True


class Hl7Listener:
    """A threaded MLLP server recording the RIS's labels in ``labels``' store; ``start`` / ``stop``."""

    def __init__(self, labels: SiteLabels, host: str, port: int, allow: tuple[str, ...] = (),
                 rules: LabelRules | None = None, audit: AuditLog | None = None, on_message=None,
                 tls: TlsFiles | None = None):  # fmt: skip
        """``on_message(outcome)``: called with ``accepted`` or ``rejected`` after each message (the metrics).
        ``tls``: MLLP over TLS only (IHE ATNA's secure node): the peer must present a certificate the CA signed; a
        plain connection, or one without such a certificate, is closed after the failed handshake and audited."""
        self.labels, self.allow, self.rules, self.audit = labels, allow, rules or LabelRules(), audit
        self.on_message = on_message or (lambda outcome: None)
        self.tls = tls
        context = tls.server_context() if tls is not None else None
        listener = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                peer = self.client_address[0]
                sock = self.request
                if context is not None:
                    sock = listener._handshake(context, sock, peer)
                    if sock is None:
                        return
                listener._serve(sock, peer)

        self.server = _Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="mura-mt-hl7", daemon=True)
        self._thread.start()
        secure = " over TLS" if self.tls is not None else ""
        logger.info(f"HL7 listener (ORU^R01 over MLLP{secure}) on {self.server.server_address[0]}:{self.port}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handshake(self, context, sock: socket.socket, peer: str):
        """The TLS socket, or None (logged and audited) when the peer does not speak TLS with a good certificate."""
        import ssl

        try:
            sock.settimeout(IDLE_TIMEOUT_S)
            return context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as err:
            reason = getattr(err, "reason", None) or str(err) or type(err).__name__
            logger.warning(f"refused an HL7 connection from {peer}: TLS handshake failed ({reason})")
            if self.audit is not None:
                self.audit.record("connection refused", "", peer, None, f"HL7: TLS handshake failed ({reason})")
            return None

    def _serve(self, sock: socket.socket, peer: str) -> None:
        """Read framed messages until the peer closes; bytes outside a frame are skipped, an oversized or stalled
        frame closes the connection. A fault in one message never ends the listener."""
        sock.settimeout(IDLE_TIMEOUT_S)
        buffer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                while True:
                    start = buffer.find(START)
                    if start < 0:
                        buffer = b""  # garbage between frames
                        break
                    end = buffer.find(END, start)
                    if end < 0:
                        buffer = buffer[start:]
                        if len(buffer) > MAX_MESSAGE_BYTES:
                            logger.warning(f"HL7 from {peer}: a frame over {MAX_MESSAGE_BYTES} bytes; closing")
                            return
                        break
                    frame, buffer = buffer[start + 1 : end], buffer[end + len(END) :]
                    sock.sendall(self.handle_message(frame, peer))
        except (OSError, TimeoutError):  # the peer went away or stalled: its next connection starts afresh
            return

    def handle_message(self, frame: bytes, peer: str) -> bytes:
        """One message's ACK (framed); labels are durable before it is returned."""
        facts: dict = {}
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            text = frame.decode("latin-1")
        try:
            facts, orders = parse_orders(text)
            if not _allowed(self.allow, facts["sending_app"], peer):
                raise Hl7Error(f"sending application {facts['sending_app']!r} from {peer} is not allowed", "AR")
            problems = self._record(facts, orders, peer)
        except Hl7Error as err:
            logger.warning(f"HL7 from {peer}: {err}")
            self.on_message("rejected")
            return ack(facts or err.facts, err.code, str(err))
        except Exception as err:  # the store is unreachable, say: the RIS must send again later
            logger.exception(f"HL7 from {peer}: could not record")
            self.on_message("rejected")
            return ack(facts, "AE", f"not recorded, send again: {type(err).__name__}")
        self.on_message("rejected" if problems else "accepted")
        return ack(facts, "AE" if problems else "AA", "; ".join(problems))

    def _record(self, facts: dict, orders: list[Order], peer: str) -> list[str]:
        """Record every usable order; the problems of the others (recorded ones are kept: a resend is a no-op)."""
        problems = []
        for order in orders:
            try:
                value = order_label(order, self.rules)
                message_id = facts["control_id"] if len(orders) == 1 else f"{facts['control_id']}/{order.index}"
                recorded = self.labels.record(
                    value, "ris", order.author or facts["sending_app"] or "RIS", study_uid=order.study_uid or None,
                    accession=order.accession or None, note=" ".join(order.text)[:500], message_id=message_id,
                    keep_waiting=True,
                )  # fmt: skip
            except (Hl7Error, LabelError) as err:
                problems.append(str(err))
                continue
            if self.audit is not None:
                self.audit.record(
                    "label received", facts["sending_app"] or "RIS", peer, recorded.study_uid,
                    f"HL7 {message_id} ({'abnormal' if value else 'normal'}, {order.status}): {recorded.outcome}",
                )  # fmt: skip
        return problems


def listener_from_args(args, store, audit: AuditLog | None, on_message=None) -> Hl7Listener | None:
    """The listener ``--hl7-port`` asks for (None without it); ValueError names a bad option or mapping file."""
    if args.hl7_port is None:
        return None
    allow = tuple(entry.strip() for entry in (args.hl7_allow or "").split(",") if entry.strip())
    for entry in allow:
        if not entry.partition("@")[0]:
            raise ValueError(f"--hl7-allow entry {entry!r}: name the sending application (MSH-3), APP[@HOST]")
    tls = None
    if getattr(args, "hl7_tls", False):
        tls = TlsFiles.from_args(args)
        if tls is None:
            raise ValueError("--hl7-tls needs the TLS files: --tls-cert, --tls-key and --tls-ca")
    try:
        return Hl7Listener(SiteLabels(store), args.hl7_host, args.hl7_port, allow, LabelRules.load(args.hl7_labels),
                           audit, on_message, tls)  # fmt: skip
    except OSError as err:
        raise ValueError(f"--hl7-port {args.hl7_port}: {err}") from err
