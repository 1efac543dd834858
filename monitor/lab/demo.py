"""``staple-monitor demo``: a small lab on 127.0.0.1 and the daemon watching it.

Needs no configuration, no network and no other program: a throwaway CA, an
OCSP responder (the standard library's HTTP server answering with cryptography's
OCSPResponseBuilder) and pyOpenSSL TLS servers that staple a good, an expiring,
an expired and a revoked response, one that staples nothing, and one that staples
an old "good" answer for a certificate the CA has since revoked.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from OpenSSL import SSL

from monitor.lab import pki

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Responder:
    """An OCSP responder for one CA on 127.0.0.1 (RFC 6960 POST and GET)."""

    def __init__(self, ca: pki.Issued) -> None:
        self.ca = ca
        self.revoked: dict[int, x509.ReasonFlags] = {}
        self.requests = 0
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                self._answer(self.rfile.read(length))

            def do_GET(self) -> None:
                try:
                    der = base64.b64decode(unquote(self.path.lstrip("/")))
                except ValueError:
                    der = b""
                self._answer(der)

            def _answer(self, der: bytes) -> None:
                body = responder.respond(der)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def respond(self, der: bytes) -> bytes:
        """The DER response to a DER request (malformedRequest for garbage)."""
        self.requests += 1
        try:
            request = ocsp.load_der_ocsp_request(der)
        except ValueError:
            return pki.unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        now = pki.utcnow()
        reason = self.revoked.get(request.serial_number)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=request.hash_algorithm,
            cert_status=ocsp.OCSPCertStatus.REVOKED if reason else ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + 7 * DAY,
            revocation_time=now - DAY if reason else None,
            revocation_reason=reason,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME, self.ca.cert)
        response = builder.sign(self.ca.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)

    def fetch(self, leaf: x509.Certificate) -> bytes:
        """Ask this responder about ``leaf`` over HTTP, as a server that staples would."""
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(leaf, self.ca.cert, hashes.SHA1())  # noqa: S303 - RFC 5019
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        answer = requests.post(
            self.url,
            data=request,
            headers={"Content-Type": "application/ocsp-request"},
            timeout=5,
        )
        answer.raise_for_status()
        return answer.content

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TLSServer:
    """A pyOpenSSL server on 127.0.0.1 that staples whatever ``staple()`` returns."""

    def __init__(self, leaf: pki.Issued, chain: list[pki.Issued], staple: Callable[[], bytes]):
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.use_certificate(leaf.cert)
        ctx.use_privatekey(leaf.key)
        for extra in chain:
            ctx.add_extra_chain_cert(extra.cert)
        # Return b"" for "no staple": pyOpenSSL then sends none.
        ctx.set_ocsp_server_callback(lambda _conn, _data: staple())

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                # Blocking on purpose: pyOpenSSL on a socket with a timeout raises
                # WantReadError instead of waiting. Only lab clients connect here.
                sock.setblocking(True)
                conn = SSL.Connection(ctx, sock)
                conn.set_accept_state()
                try:
                    conn.do_handshake()
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    conn.shutdown()
                except (SSL.Error, OSError):
                    pass  # a probe that hangs up after the handshake is normal

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Lab:
    """The running demo lab and the daemon configuration that watches it."""

    dir: Path
    responder: Responder
    servers: dict[str, TLSServer]
    config_file: Path

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.responder.stop()


SCENARIOS = {
    "good": "staples a fresh response fetched from the lab's responder",
    "expiring": "staples a response whose nextUpdate is 2 hours away",
    "expired": "staples a response whose nextUpdate passed a day ago",
    "revoked": "staples the responder's answer: revoked (key compromise)",
    "none": "staples nothing although its certificate names a responder",
    "stale": "staples an old 'good' answer although the CA has since revoked the certificate",
}


def start_lab(directory: Path | None = None, interval: str = "15s") -> Lab:
    """Build the PKI, start the responder and one TLS server per scenario, write a config."""
    work = directory or Path(tempfile.mkdtemp(prefix="staple-monitor-demo-"))
    now = pki.utcnow()
    root = pki.make_root("staple-monitor demo root", now)
    ca = pki.make_intermediate("staple-monitor demo CA", root, now)
    responder = Responder(ca)
    leaves = {
        name: pki.make_leaf([f"{name}.demo.test", "127.0.0.1"], ca, now, ocsp_url=responder.url)
        for name in SCENARIOS
    }
    responder.revoked[leaves["revoked"].cert.serial_number] = x509.ReasonFlags.key_compromise
    # Revoked at the CA after the server cached its "good" answer: only the
    # cross-check with the responder shows it (revoked_at_responder).
    responder.revoked[leaves["stale"].cert.serial_number] = x509.ReasonFlags.superseded

    def crafted(name: str, this_update: timedelta, next_update: timedelta) -> Callable[[], bytes]:
        der = pki.make_response(
            leaves[name].cert, ca.cert, ca, this_update=now + this_update,
            next_update=now + next_update,
        )  # fmt: skip
        return lambda: der

    def live(name: str) -> Callable[[], bytes]:
        # Like nginx: fetch once, keep the answer, refresh it after an hour.
        cache: dict[str, Any] = {}

        def staple() -> bytes:
            if "at" not in cache or pki.utcnow() - cache["at"] > HOUR:
                cache["der"], cache["at"] = responder.fetch(leaves[name].cert), pki.utcnow()
            return bytes(cache["der"])

        return staple

    staples = {
        "good": live("good"),
        "expiring": crafted("expiring", -6 * DAY, 2 * HOUR),
        "expired": crafted("expired", -8 * DAY, -DAY),
        "revoked": live("revoked"),
        "none": lambda: b"",
        "stale": crafted("stale", -HOUR, 7 * DAY),
    }
    servers = {name: TLSServer(leaves[name], [ca], staples[name]) for name in SCENARIOS}
    pki.write(work / "root.pem", root.cert_pem())
    lines = [
        "# Written by `staple-monitor demo`: the daemon's view of the demo lab.",
        f"defaults: {{interval: {interval}, timeout: 5s, ca_file: root.pem, retry_no_staple: 0}}",
        "# The lab's own responder: no CA to be polite to, so no rate limit worth the name.",
        "responder: {min_interval: 10ms}",
        "targets:",
    ]
    for name, server in servers.items():
        lines += [
            f"  - host: {name}.demo.test",
            f"    port: {server.port}",
            "    addresses: [127.0.0.1]  # pinned: no DNS needed",
            f"    labels: {{scenario: {name}}}",
        ]
    config = work / "staple-monitor.yaml"
    config.write_text("\n".join(lines) + "\n")
    return Lab(work, responder, servers, config)
