"""DICOM TLS for the node, both ways: the Storage SCP accepts only peers whose certificate the site's CA signed,
and deliveries (C-STORE, STOW-RS to https://) present the node's certificate and verify the receiver against the
same CA. One set of files: ``--tls-cert``, ``--tls-key``, ``--tls-ca``.

The TLS handshake of an incoming connection runs in that connection's own thread, not in pynetdicom's accept loop
(where a peer that never finishes its handshake would hold up every other sender), and a refused peer (plain DICOM,
no certificate, one the CA did not sign) is logged with its address and reported to ``on_refused``; the node keeps
serving.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # DICOM PS3.15's secure transport profiles: TLS 1.2 or newer


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", default=None, help="the node's certificate (PEM): DICOM TLS in and out")
    parser.add_argument("--tls-key", default=None, help="the private key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", default=None, help="the CA (PEM) that signs the certificates of allowed peers")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_args(cls, args) -> TlsFiles | None:
        """The three files, or None without any; ValueError names what is missing or unreadable."""
        given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
        if not any(given.values()):
            return None
        missing = [flag for flag, value in given.items() if not value]
        if missing:
            raise ValueError(
                f"DICOM TLS needs --tls-cert, --tls-key and --tls-ca together; missing {', '.join(missing)}"
            )
        files = cls(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
        files.server_context()  # unreadable or mismatched files are refused at start-up, not at the first peer
        return files

    def server_context(self) -> ssl.SSLContext:
        """Peers must present a certificate the CA signed."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_VERSION
        context.verify_mode = ssl.CERT_REQUIRED
        self._load(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """The receiver must present a certificate the CA signed, for the host we connect to; ours goes along."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = MINIMUM_VERSION
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(self.cert, self.key)
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"cannot use the TLS files {self.cert}, {self.key}, {self.ca}: {err}") from None


@cache
def tls_association_server():
    """pynetdicom's threaded server with the handshake moved into the connection's thread (see the module). Built
    on first use: pynetdicom takes half a second to import, and an app without a TLS node never needs it."""
    from pynetdicom.transport import ThreadedAssociationServer

    class TlsAssociationServer(ThreadedAssociationServer):
        on_refused: Callable[[str, str], None] | None = None  # (peer address, reason)

        def get_request(self):
            client, address = self.socket.accept()
            return self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False), address

        def process_request_thread(self, request, client_address) -> None:
            try:
                request.settimeout(self.ae.network_timeout)
                request.do_handshake()
                request.settimeout(None)  # as an accepted socket is: pynetdicom waits on it with select()
            except (ssl.SSLError, OSError) as err:
                reason = getattr(err, "reason", None) or str(err) or type(err).__name__
                logger.warning(f"refused a DICOM connection from {client_address[0]}: TLS handshake failed ({reason})")
                if self.on_refused is not None:
                    self.on_refused(client_address[0], f"TLS handshake failed: {reason}")
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)

    return TlsAssociationServer
