"""The TLS probe: one handshake against one address, asking for a stapled OCSP response.

I/O only. It captures what the server sent (chain, staple, protocol, timings) and
never judges it; ``monitor.ocsp`` does that.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import heapq
import ipaddress
import itertools
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, replace

from cryptography import x509
from OpenSSL import SSL

from monitor.gate import GATE


class TLSVersion(enum.StrEnum):
    """Which TLS versions the probe offers."""

    ANY = "any"  # TLS 1.2 or 1.3, whichever the server prefers
    TLS1_2 = "tls1.2"
    TLS1_3 = "tls1.3"


class ProbeError(enum.StrEnum):
    """Why a probe produced no handshake. Values are verdict reason names."""

    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    TLS_ERROR = "tls_error"


@dataclass(frozen=True)
class Capture:
    """What one handshake showed.

    ``error`` is None when the handshake completed. ``staple`` is None when the
    server sent no CertificateStatus (or an empty one); otherwise the raw DER bytes,
    undecoded. ``chain`` is the peer chain as sent, leaf first.
    """

    address: str
    port: int
    server_name: str | None
    error: ProbeError | None = None
    error_detail: str = ""
    chain: tuple[x509.Certificate, ...] = ()
    staple: bytes | None = None
    protocol: str | None = None
    cipher: str | None = None
    connect_seconds: float | None = None
    handshake_seconds: float | None = None
    tls_version: TLSVersion = TLSVersion.ANY


def _on_ocsp(conn: SSL.Connection, data: bytes, _unused: object) -> bool:
    # Store the staple on the connection and always go on: a monitor must finish
    # the handshake to report on it (RFC 6066 section 8 leaves acceptance to us).
    box = conn.get_app_data()
    if isinstance(box, dict):
        box["staple"] = bytes(data) if data else None
    return True


_CONTEXTS: dict[TLSVersion, SSL.Context] = {}


def context_for(version: TLSVersion) -> SSL.Context:
    """One shared client context per TLS profile.

    Verification is off on purpose: the verdict checks the chain itself against
    the trust store with a clock it is given. Tickets are off and no session is
    ever set, so every handshake is a full one (a resumed session carries no staple).
    """
    ctx = _CONTEXTS.get(version)
    if ctx is not None:
        return ctx
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if version is TLSVersion.TLS1_2:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    elif version is TLSVersion.TLS1_3:
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_ocsp_client_callback(_on_ocsp)
    _CONTEXTS[version] = ctx
    return ctx


@functools.lru_cache(maxsize=65536)
def is_ip_literal(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 address (asked several times per probe)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _ssl_error_text(exc: BaseException) -> str:
    if isinstance(exc, SSL.SysCallError):
        code, text = (*exc.args, None, None)[:2]
        if code == -1:
            return "connection closed by the server during the handshake"
        return f"system error during the handshake: {text or code}"
    if isinstance(exc, SSL.ZeroReturnError):
        return "connection closed by the server during the handshake"
    parts: list[str] = []
    for arg in exc.args:
        if isinstance(arg, list):
            parts.extend(str(item[-1]) for item in arg if isinstance(item, tuple))
        else:
            parts.append(str(arg))
    return "TLS handshake failed: " + ("; ".join(p for p in parts if p) or type(exc).__name__)


def probe(
    address: str,
    port: int,
    server_name: str | None,
    *,
    timeout: float,
    tls_version: TLSVersion = TLSVersion.ANY,
) -> Capture:
    """Connect to ``address:port``, send SNI ``server_name`` and status_request.

    One deadline of ``timeout`` seconds covers connect and handshake, so a server
    that accepts and never answers, or drips bytes, is cut off on time.
    """
    base = Capture(address, port, server_name, tls_version=tls_version)
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        t0 = time.monotonic()
        rc = sock.connect_ex((address, port))
        if rc not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            return replace(
                base, error=ProbeError.CONNECT_ERROR, error_detail=f"connect: {os.strerror(rc)}"
            )
        if rc != 0:
            remaining = deadline - time.monotonic()
            with GATE.io():
                _, writable, _ = select.select([], [sock], [], max(remaining, 0))
            if not writable:
                return replace(
                    base,
                    error=ProbeError.TIMEOUT,
                    error_detail=f"TCP connect did not complete within {timeout:g}s",
                )
            rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc != 0:
                return replace(
                    base,
                    error=ProbeError.CONNECT_ERROR,
                    error_detail=f"connect: {os.strerror(rc)}",
                )
        connected = time.monotonic()
        connect_seconds = connected - t0

        # The handshake runs on a blocking socket: one C call for the whole exchange,
        # with the GIL released throughout, costs far less CPU than a select loop
        # that goes back to Python on every record. Socket timeouts bound each read
        # and write; the reaper ends the whole handshake at the deadline, so a
        # server that drips a byte at a time is cut off on time too.
        remaining = max(deadline - time.monotonic(), 0.001)
        sock.setblocking(True)
        timeval = struct.pack("ll", int(remaining), int(remaining % 1 * 1e6) or 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        conn = SSL.Connection(context_for(tls_version), sock)
        box: dict[str, bytes | None] = {"staple": None}
        conn.set_app_data(box)
        if server_name and not is_ip_literal(server_name):
            conn.set_tlsext_host_name(server_name.encode("idna"))
        conn.request_ocsp()
        conn.set_connect_state()
        watch = _REAPER.watch(deadline, sock)
        try:
            with GATE.io():
                conn.do_handshake()
        except (SSL.WantReadError, SSL.WantWriteError):
            return _timed_out(base, timeout, connect_seconds)  # a socket timeout expired
        except SSL.Error as exc:
            if watch.fired or time.monotonic() >= deadline:
                return _timed_out(base, timeout, connect_seconds)
            return replace(
                base,
                error=ProbeError.TLS_ERROR,
                error_detail=_ssl_error_text(exc),
                connect_seconds=connect_seconds,
            )
        finally:
            _REAPER.release(watch)
        handshake_seconds = time.monotonic() - connected

        try:
            chain = tuple(conn.get_peer_cert_chain(as_cryptography=True) or ())
        except Exception as exc:  # hostile bytes: cryptography raises several types
            return replace(
                base,
                error=ProbeError.TLS_ERROR,
                error_detail=f"the server's certificate cannot be parsed: {exc}",
                connect_seconds=connect_seconds,
            )
        return replace(
            base,
            chain=chain,
            staple=box["staple"],
            protocol=conn.get_protocol_version_name(),
            cipher=conn.get_cipher_name(),
            connect_seconds=connect_seconds,
            handshake_seconds=handshake_seconds,
        )
    except OSError as exc:
        return replace(base, error=ProbeError.CONNECT_ERROR, error_detail=f"connect: {exc}")
    finally:
        sock.close()


class _Watch:
    __slots__ = ("deadline", "fired", "seq", "sock")

    def __init__(self, deadline: float, seq: int, sock: socket.socket) -> None:
        self.deadline = deadline
        self.seq = seq
        self.sock: socket.socket | None = sock
        self.fired = False

    def __lt__(self, other: _Watch) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class _Reaper:
    """One thread that shuts down the sockets of handshakes past their deadline.

    Finished handshakes are released under the same lock the reaper shuts sockets
    down with, so it never touches a socket that has been closed (and whose file
    descriptor may already belong to another probe). Released entries are dropped
    lazily; the thread wakes about once per timeout, not once per probe.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Watch] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket) -> _Watch:
        entry = _Watch(deadline, next(self._seq), sock)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="probe-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    def release(self, entry: _Watch) -> None:
        with self._cond:
            entry.sock = None

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0].sock is None or self._heap[0].deadline <= now):
                    entry = heapq.heappop(self._heap)
                    if entry.sock is not None:
                        entry.fired = True
                        with contextlib.suppress(OSError):
                            entry.sock.shutdown(socket.SHUT_RDWR)
                self._cond.wait(self._heap[0].deadline - now if self._heap else None)


_REAPER = _Reaper()


def _timed_out(base: Capture, timeout: float, connect_seconds: float) -> Capture:
    return replace(
        base,
        error=ProbeError.TIMEOUT,
        error_detail=f"TLS handshake did not complete within {timeout:g}s",
        connect_seconds=connect_seconds,
    )
