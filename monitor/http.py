"""HTTP endpoints: /metrics, /probe, /healthz, /-/reload and a status page at /.

A WSGI application served by the standard library's wsgiref server with one
thread per request; /metrics content negotiation comes from prometheus_client.
"""

from __future__ import annotations

import html
import itertools
import logging
import socket
import ssl
import zlib
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor import __version__
from monitor.daemon import Daemon, ProbeRefused
from monitor.durations import humanize
from monitor.metrics import probe_exposition
from monitor.ocsp import State
from monitor.webconfig import WebConfig

log = logging.getLogger("staple_monitor.http")

StartResponse = Callable[..., Any]
PROBE_PARAMS = frozenset({"target", "server_name", "debug"})
MAX_QUERY = 2048
HANDSHAKE_TIMEOUT = 10.0


def _gzipped(parts: Iterable[str], tail: bytes) -> Iterator[bytes]:
    # wbits=31: a gzip member (header and trailer), as Content-Encoding: gzip means.
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    for part in parts:
        data = z.compress(part.encode())
        if data:
            yield data
    yield z.compress(tail) + z.flush()


def _reply(
    start_response: StartResponse, status: str, body: str, content_type: str = "text/plain"
) -> list[bytes]:
    data = body.encode()
    start_response(
        status,
        [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


class App:
    """The WSGI application of the daemon."""

    def __init__(self, daemon: Daemon, web: WebConfig | None = None) -> None:
        self.daemon = daemon
        self.web = web or WebConfig()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.web.authorised(environ.get("HTTP_AUTHORIZATION")):
            data = b"Unauthorized\n"
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="staple-monitor"'),
                 ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
            )  # fmt: skip
            return [data]
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            if method != "POST":
                return _reply(start_response, "405 Method Not Allowed", "use POST\n")
            ok, message = self.daemon.reload()
            status = "200 OK" if ok else "500 Internal Server Error"
            return _reply(start_response, status, message + "\n")
        if method not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "use GET\n")
        if path == "/metrics":
            return self.metrics(environ, start_response)
        if path == "/probe":
            return self.probe(environ, start_response)
        if path == "/healthz":
            if self.daemon.scheduler.running:
                return _reply(start_response, "200 OK", "ok\n")
            return _reply(start_response, "503 Service Unavailable", "scheduler not running\n")
        if path == "/":
            return _reply(start_response, "200 OK", self.status_page(), "text/html")
        return _reply(start_response, "404 Not Found", "not found\n")

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Every result, then the daemon's own metrics, in the text format (0.0.4).

        Streamed piece by piece (the connection's end marks the body's end), so a
        large fleet's scrape never sits in memory whole, plain or compressed.
        """
        parts = self.daemon.results.render_parts()
        own = generate_latest(self.daemon.registry)
        headers = [("Content-Type", CONTENT_TYPE_LATEST)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", headers)
            return _gzipped(parts, own)
        start_response("200 OK", headers)
        return itertools.chain((p.encode() for p in parts), (own,))

    def probe(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Probe one target now and return only its metrics (blackbox_exporter's pattern)."""
        query = environ.get("QUERY_STRING", "")
        if len(query) > MAX_QUERY:
            return _reply(start_response, "400 Bad Request", "query string too long\n")
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            return _reply(start_response, "400 Bad Request", "malformed query string\n")
        unknown = sorted(set(params) - PROBE_PARAMS)
        if unknown:
            # Nothing in the query may add or change labels: unknown names are refused.
            return _reply(
                start_response,
                "400 Bad Request",
                f"unknown parameter(s): {', '.join(unknown)}"
                " (allowed: target, server_name, debug)\n",
            )
        if any(len(v) > 1 for v in params.values()):
            return _reply(start_response, "400 Bad Request", "each parameter may be given once\n")
        target_text = params.get("target", [""])[0]
        if not target_text:
            return _reply(start_response, "400 Bad Request", "target parameter is missing\n")
        server_name = params.get("server_name", [None])[0] or None
        debug = params.get("debug", ["false"])[0].lower() == "true"
        scrape_timeout = None
        header = environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")
        if header:
            try:
                scrape_timeout = float(header)
            except ValueError:
                message = f"bad X-Prometheus-Scrape-Timeout-Seconds: {header[:40]!r}\n"
                return _reply(start_response, "400 Bad Request", message)
        try:
            target = self.daemon.find_target(target_text, server_name)
            results = self.daemon.probe(target, scrape_timeout)
        except ProbeRefused as exc:
            reason = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}
            status = f"{exc.status} {reason.get(exc.status, 'Error')}"
            return _reply(start_response, status, f"{exc}\n")
        metrics = probe_exposition(results, target.labels)
        if debug:
            lines = [line for r in results for line in r.log]
            body = "Logs for the probe:\n" + "\n".join(lines) + "\n\nMetrics:\n" + metrics
            return _reply(start_response, "200 OK", body)
        return _reply(start_response, "200 OK", metrics, CONTENT_TYPE_LATEST.split(";")[0])

    def status_page(self) -> str:
        """Every target and address, worst first."""
        now = self.daemon.clock()
        rows = sorted(
            self.daemon.rows(),
            key=lambda tr: (-tr[1].verdict.state.severity, tr[1].verdict.reason.value, tr[0].name),
        )
        colours = {State.OK: "#d7f5d7", State.WARNING: "#fff0b3", State.CRITICAL: "#ffd0d0",
                   State.UNKNOWN: "#e0e0e0"}  # fmt: skip
        body = []
        for target, r in rows:
            v = r.verdict
            nxt = "-"
            if v.next_update is not None:
                nxt = f"{v.next_update:%Y-%m-%d %H:%M}Z ({humanize(v.next_update - now)})"
            error = "" if v.state is State.OK else v.detail
            cells = [
                v.state.value.upper(),
                v.reason.value,
                target.name,
                r.address or "-",
                r.server_name or "-",
                v.cert_status.value if v.cert_status else "-",
                nxt,
                humanize(r.started_at - now),
                error,
            ]
            body.append(
                f'<tr style="background:{colours[v.state]}">'
                + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                + "</tr>"
            )
        pending = len(self.daemon.config.targets) - len({t.key for t, _ in rows})
        heads = ["state", "reason", "target", "address", "server name", "cert status",
                 "nextUpdate", "last probe", "last error"]  # fmt: skip
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='30'><title>staple-monitor</title>"
            "<style>body{font-family:sans-serif}td,th{padding:3px 8px;text-align:left}"
            "table{border-collapse:collapse}</style></head><body>"
            f"<h1>staple-monitor {html.escape(__version__)}</h1>"
            f"<p>{len(self.daemon.config.targets)} targets from"
            f" {html.escape(self.daemon.config.source)}; {pending} not probed yet."
            f" Page made {now:%Y-%m-%d %H:%M:%S}Z."
            " <a href='/metrics'>/metrics</a></p>"
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
            + "".join(body) + "</table></body></html>"
        )  # fmt: skip


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the request's own thread, under a timeout, so
        # a client that stalls it holds up nobody else.
        if self.tls is not None:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address) or ``[IPv6]:PORT``; else ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, :PORT or [IPv6]:PORT, got {text!r}")
    host = host.strip("[]")
    return host, int(port)


def serve(app: App, address: str) -> WSGIServer:
    """Bind ``address`` and return the server (call ``serve_forever`` in a thread)."""
    host, port = parse_listen_address(address)
    server: _Server
    if host and ":" not in host:
        server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    else:
        try:
            # IPv6, or every address: a dual-stack socket on "::".
            server = make_server(
                host or "::", port, app, server_class=_Server6, handler_class=_Quiet
            )
        except OSError:
            if host:
                raise
            server = make_server("0.0.0.0", port, app, server_class=_Server, handler_class=_Quiet)  # noqa: S104
    server.tls = app.web.tls
    return server
