"""One check of one target: resolve, probe every address, retry a missing staple, judge.

Shared by ``staple-monitor check``, the daemon's scheduler and ``/probe`` so that
all three reach the same verdict for the same server.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor import ocsp
from monitor.gate import GATE
from monitor.ocsp import Reason, Verdict
from monitor.probe import Capture, TLSVersion, is_ip_literal, probe
from monitor.responder import ResponderClient, ResponderView
from monitor.trust import Trust

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class CheckSpec:
    """What to check and how; a target from the command line or the config."""

    host: str
    port: int = 443
    server_name: str | None = None  # None: the host, unless it is an IP literal
    addresses: tuple[str, ...] = ()  # pinned addresses; empty: resolve host (A and AAAA)
    family: str = "all"  # which resolved addresses to probe: all, ipv4 or ipv6
    tls_version: TLSVersion = TLSVersion.ANY
    timeout: timedelta = timedelta(seconds=10)
    warn_within: timedelta = ocsp.DEFAULT_WARN_WITHIN
    skew: timedelta = ocsp.DEFAULT_SKEW
    retry_no_staple: timedelta = timedelta(seconds=2)  # 0 disables the retry
    responder_check: bool = True  # cross-check with the CA's responder (when given a client)
    lag_warning: timedelta = ocsp.DEFAULT_LAG_WARNING

    @property
    def target(self) -> str:
        """``host:port`` as configured (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def sni(self) -> str | None:
        """The name sent as SNI and checked against the certificate."""
        if self.server_name:
            return self.server_name
        return None if is_ip_literal(self.host) else self.host


@dataclass(frozen=True)
class Result:
    """The outcome for one (target, address)."""

    target: str
    address: str | None  # None when resolution failed
    server_name: str | None
    verdict: Verdict
    started_at: datetime
    duration_seconds: float
    retried: bool = False
    protocol: str | None = None
    cipher: str | None = None
    connect_seconds: float | None = None
    handshake_seconds: float | None = None
    responder: ResponderView | None = None  # None: no cross-check for this result
    log: tuple[str, ...] = field(default=(), compare=False)


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")


def parse_target(text: str, default_port: int | None = 443) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError says what is wrong."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError(f"target {text!r} contains spaces or control characters")
    m = _HOSTPORT.match(text)
    if not m:
        if text.count(":") > 1 and not text.startswith("["):
            raise ValueError(f"IPv6 address must be in brackets, like [{text}]:443")
        raise ValueError(f"expected HOST[:PORT] or [IPv6]:PORT, got {text!r}")
    host = m.group("v6") or m.group("host") or ""
    if len(host) > 253:
        raise ValueError(f"host name is longer than 253 characters ({len(host)})")
    port_text = m.group("port")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT with an explicit port, got {text!r}")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be an integer 1-65535, got {port_text!r}")
    return host, int(port_text)


class ResolveError(Exception):
    """The host name did not resolve; the message says why."""


_FAMILIES = {"all": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


def resolve(host: str, port: int, family: str = "all") -> tuple[str, ...]:
    """Every distinct address ``host`` resolves to (A and AAAA), in resolver order."""
    if is_ip_literal(host):
        return (host,)
    try:
        infos = socket.getaddrinfo(host, port, _FAMILIES[family], socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve {host}: {exc}") from None
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    if not seen:
        raise ResolveError(f"cannot resolve {host}: no addresses")
    return tuple(seen)


def check_address(
    spec: CheckSpec,
    address: str,
    trust: Trust,
    *,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
    responder: ResponderClient | None = None,
) -> Result:
    """Probe one address and judge it, retrying once when a staple is expected but absent.

    nginx fetches its staple lazily: the first handshake after a start or reload
    carries none, so one retry after ``spec.retry_no_staple`` avoids a false alarm.
    ``deadline`` (time.monotonic) bounds everything, retry included.
    """
    started_at = clock()
    t0 = time.monotonic()
    log = [f"probing {spec.target} at {address} (SNI {spec.sni or '-'})"]
    capture = _probe(spec, address, deadline)
    log.append(_describe(capture))
    retried = False
    delay = spec.retry_no_staple.total_seconds()
    if _expects_staple(capture) and delay > 0:
        if deadline is not None and time.monotonic() + delay + 0.5 > deadline:
            log.append("no staple; no time left in the deadline for a retry")
        else:
            retried = True
            log.append(f"no staple; retrying once after {delay:g}s")
            with GATE.io():
                sleep(delay)
            capture = _probe(spec, address, deadline)
            log.append(_describe(capture))
    now = clock()
    judged = ocsp.judge_capture(
        capture, trust, now=now, skew=spec.skew, warn_within=spec.warn_within
    )
    verdict = judged.verdict
    view = None
    if responder is not None and spec.responder_check:
        view = _ask_responder(capture, judged, responder, trust, now)
        if view is not None:
            log.append(_describe_view(view))
            good = view.good.verdict if view.good is not None else None
            verdict = ocsp.cross_check(verdict, good, lag_warning=spec.lag_warning)
    log.append(f"verdict: {verdict.state.value} ({verdict.reason.value}): {verdict.detail}")
    return Result(
        target=spec.target,
        address=address,
        server_name=spec.sni,
        verdict=verdict,
        started_at=started_at,
        duration_seconds=time.monotonic() - t0,
        retried=retried,
        protocol=capture.protocol,
        cipher=capture.cipher,
        connect_seconds=capture.connect_seconds,
        handshake_seconds=capture.handshake_seconds,
        responder=view,
        log=tuple(log),
    )


def check(
    spec: CheckSpec,
    trust: Trust,
    *,
    clock: Clock,
    deadline: float | None = None,
    responder: ResponderClient | None = None,
) -> list[Result]:
    """Check every address of ``spec``: one Result each (one for a DNS failure)."""
    addresses = spec.addresses
    if not addresses:
        try:
            with GATE.io():
                addresses = resolve(spec.host, spec.port, spec.family)
        except ResolveError as exc:
            return [
                Result(
                    target=spec.target,
                    address=None,
                    server_name=spec.sni,
                    verdict=ocsp.failure(Reason.DNS_ERROR, str(exc)),
                    started_at=clock(),
                    duration_seconds=0.0,
                    log=(str(exc),),
                )
            ]
    return [
        check_address(spec, a, trust, clock=clock, deadline=deadline, responder=responder)
        for a in addresses
    ]


def _probe(spec: CheckSpec, address: str, deadline: float | None) -> Capture:
    timeout = spec.timeout.total_seconds()
    if deadline is not None:
        timeout = max(min(timeout, deadline - time.monotonic()), 0.001)
    return probe(address, spec.port, spec.sni, timeout=timeout, tls_version=spec.tls_version)


def _ask_responder(
    capture: Capture,
    judged: ocsp.Judged,
    responder: ResponderClient,
    trust: Trust,
    now: datetime,
) -> ResponderView | None:
    """The CA responder's answer about the leaf, when there is a verified issuer and a URL."""
    # An issuer is only found on a verified path, so it implies a trusted chain.
    urls = [u for u in judged.verdict.ocsp_urls if u.lower().startswith(("http://", "https://"))]
    if judged.issuer is None or not urls:
        return None
    return responder.view(
        capture.chain[0], judged.issuer, urls[0], now=now, memo=trust.memo,
        leaf_print=judged.leaf_print,
    )  # fmt: skip


def _describe_view(view: ResponderView) -> str:
    q = view.latest
    if q is None:
        return "responder: not asked yet (its rate limit allows no query now)"
    how = "cached answer" if view.cached else "asked now"
    if view.rate_limited:
        how += "; a query was due but the rate limit held it back"
    head = f"responder {q.url} ({q.method.upper()}, {how}):"
    if q.error is not None:
        return f"{head} {q.error.value}: {q.error_detail}"
    v = q.verdict
    assert v is not None
    return f"{head} {v.cert_status}, thisUpdate {v.this_update}, in {q.latency_seconds:.3f}s"


def _expects_staple(capture: Capture) -> bool:
    """A handshake that worked but brought no staple for a certificate that could have one."""
    if capture.error is not None or capture.staple is not None or not capture.chain:
        return False
    return ocsp.staple_expected(capture.chain[0])


def _describe(capture: Capture) -> str:
    if capture.error is not None:
        return f"probe failed: {capture.error.value}: {capture.error_detail}"
    staple = f"{len(capture.staple)} byte staple" if capture.staple is not None else "no staple"
    return (
        f"handshake {capture.protocol} {capture.cipher}, {len(capture.chain)} certificate(s),"
        f" {staple}"
    )
