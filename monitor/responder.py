"""The cross-check: ask the CA's own OCSP responder about the certificate a server sent.

A staple can look fine while being wrong: the CA revoked the certificate but the
server keeps stapling its cached "good" answer until that answer's nextUpdate, or
the server's refresh is stuck while the responder publishes fresher answers. The
responder's answer, judged by the same code as the staple (``ocsp.judge_response``),
tells both apart.

Polite toward CAs by construction:
- one answer per certificate (and responder URL) is kept until ``refresh_fraction`` of
  its validity has passed, and shared by every target and address serving it;
- concurrent checks of the same certificate wait for the one query in flight;
- a responder (scheme, host and port of its URL) is asked at most once per
  ``min_interval``; a check that would exceed it uses what is cached, or goes without;
- a failed query is not repeated for ``retry_after_error``.

I/O (``requests``) lives here; what an answer means for the verdict is
``ocsp.cross_check``, which is pure.
"""

from __future__ import annotations

import base64
import enum
import functools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as cocsp

from monitor import ocsp
from monitor.gate import GATE
from monitor.memo import Memo
from monitor.ocsp import Verdict

# RFC 5019 section 5: GET when the whole URL stays under 255 bytes, else POST.
GET_URL_LIMIT = 255
# OCSP answers are a few KiB; anything past this is not one.
MAX_ANSWER_BYTES = 256 * 1024
# An answer without nextUpdate ("newer information is always available") is asked again after:
NO_NEXT_UPDATE_REFRESH = timedelta(hours=1)


class Method(enum.StrEnum):
    """How to send the request."""

    AUTO = "auto"  # GET when small enough (RFC 5019), else POST
    GET = "get"
    POST = "post"


class QueryError(enum.StrEnum):
    """Why a query gave no usable answer. Values are metric label values."""

    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    HTTP_ERROR = "http_error"  # a status other than 200
    TOO_LARGE = "too_large"
    BAD_ANSWER = "bad_answer"  # not a successful, signed answer about this certificate


@dataclass(frozen=True)
class ResponderSettings:
    """The cross-check's politeness and timeouts (the config's ``responder:`` section)."""

    timeout: timedelta = timedelta(seconds=5)
    refresh_fraction: float = 0.5
    min_interval: timedelta = timedelta(seconds=1)
    retry_after_error: timedelta = timedelta(minutes=1)
    method: Method = Method.AUTO


@dataclass(frozen=True)
class Query:
    """One query to a responder and what came of it.

    ``verdict`` is the answer judged like a staple (None when no DER answer came
    back); ``error`` is None when the answer is a successful, validly signed
    response about this certificate, whatever its status.
    """

    url: str
    method: str
    asked_at: datetime
    latency_seconds: float | None
    http_status: int | None
    error: QueryError | None
    error_detail: str = ""
    verdict: Verdict | None = None

    @property
    def up(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ResponderView:
    """What the cross-check knows for one certificate when a check asks.

    ``latest`` is the most recent query (it may have failed); ``good`` the most recent
    usable answer, kept while a newer query fails, so a revocation the responder has
    already told us about does not vanish when the responder goes down. ``cached``
    says no query was made for this check. ``rate_limited`` says a query was due but
    the responder's rate did not allow it.
    """

    latest: Query | None
    good: Query | None
    cached: bool
    rate_limited: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""

        def query(q: Query | None) -> dict[str, Any] | None:
            if q is None:
                return None
            return {
                "url": q.url,
                "method": q.method,
                "asked_at": q.asked_at.isoformat(),
                "latency_seconds": q.latency_seconds,
                "http_status": q.http_status,
                "up": q.up,
                "error": q.error.value if q.error else None,
                "error_detail": q.error_detail or None,
                "verdict": q.verdict.as_dict() if q.verdict else None,
            }

        return {
            "cached": self.cached,
            "rate_limited": self.rate_limited,
            "latest": query(self.latest),
            "good": query(self.good),
        }


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class _Entry:
    latest: Query | None = None
    good: Query | None = None
    refresh_at: float = 0.0  # time.monotonic() after which to ask again
    used: float = 0.0  # time.monotonic() of the last check that wanted it
    done: threading.Event = field(default_factory=_set_event)  # clear while a query runs


@functools.lru_cache(maxsize=1024)
def origin(url: str) -> str:
    """scheme://host:port of a URL: the unit the rate limit counts."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def request_der(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """An OCSP request for ``leaf`` (SHA-1 CertID, no nonce: RFC 5019's profile, which
    every CA's responder and cache serves)."""
    builder = cocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())  # noqa: S303
    return builder.build().public_bytes(serialization.Encoding.DER)


class ResponderClient:
    """Queries responders for the daemon, ``/probe`` and ``check``; thread-safe.

    ``stats`` counts queries per (origin, outcome) and checks answered from the cache
    or refused by the rate limit, for the daemon's metrics.
    """

    def __init__(self, settings: ResponderSettings | None = None) -> None:
        self.settings = settings or ResponderSettings()
        self._lock = threading.Lock()
        self._entries: dict[tuple[bytes, str], _Entry] = {}
        self._next_slot: dict[str, float] = {}
        self._next_prune = 0.0
        self._local = threading.local()
        self.stats: Counter[tuple[str, str]] = Counter()

    def view(
        self,
        leaf: x509.Certificate,
        issuer: x509.Certificate,
        url: str,
        *,
        now: datetime,
        memo: Memo,
        leaf_print: bytes | None = None,
    ) -> ResponderView:
        """The responder's answer about ``leaf``: cached, or asked now if due and allowed.

        ``leaf_print`` is the leaf's SHA-256 fingerprint when the caller has it already.
        """
        key = (leaf_print or leaf.fingerprint(hashes.SHA256()), url)
        where = origin(url)
        with self._lock:
            clock = time.monotonic()
            self._prune(clock)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.used = clock
            if not entry.done.is_set():
                action = "wait"  # another check of this certificate is asking: share it
            elif clock < entry.refresh_at:
                action = "cached"
            elif clock < self._next_slot.get(where, 0.0):
                self.stats[(where, "rate_limited")] += 1
                return ResponderView(entry.latest, entry.good, cached=True, rate_limited=True)
            else:
                action = "ask"
                self._next_slot[where] = clock + self.settings.min_interval.total_seconds()
                entry.done.clear()
        if action != "ask":
            if action == "wait":
                with GATE.io():
                    entry.done.wait(self.settings.timeout.total_seconds() + 1)
            with self._lock:
                self.stats[(where, "cached")] += 1
            return ResponderView(entry.latest, entry.good, cached=True)
        try:
            with GATE.io():
                query = self._ask(leaf, issuer, url, now=now, memo=memo)
        except Exception as exc:  # a bug here must not stop the staple's check
            query = Query(
                url, "-", now, None, None, QueryError.BAD_ANSWER, f"internal error: {exc!r}"
            )
        with self._lock:
            entry.latest = query
            if query.up:
                entry.good = query
            elif entry.good is not None and entry.good.verdict is not None:
                # Keep an older good answer only while it is still valid.
                nxt = entry.good.verdict.next_update
                if nxt is not None and nxt <= now:
                    entry.good = None
            entry.refresh_at = time.monotonic() + self._refresh_after(query, now)
            self.stats[(where, query.error.value if query.error else "ok")] += 1
            entry.done.set()
        return ResponderView(entry.latest, entry.good, cached=False)

    def stats_snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of ``stats`` for one scrape."""
        with self._lock:
            return dict(self.stats)

    def _prune(self, clock: float) -> None:
        # Certificates no check has wanted for a day (replaced, or their target
        # removed) are forgotten; looked at once per hour of use at most.
        if clock < self._next_prune:
            return
        self._next_prune = clock + 3600
        for key in [k for k, e in self._entries.items() if clock - e.used > 86400]:
            del self._entries[key]

    def _refresh_after(self, query: Query, now: datetime) -> float:
        """Seconds until the answer is due for a refresh."""
        retry = self.settings.retry_after_error.total_seconds()
        v = query.verdict
        if not query.up or v is None or v.this_update is None:
            return retry
        if v.next_update is None:
            return NO_NEXT_UPDATE_REFRESH.total_seconds()
        due = v.this_update + (v.next_update - v.this_update) * self.settings.refresh_fraction
        # Never sooner than the error retry: a responder handing out nearly expired
        # answers is not asked in a loop.
        return max((due - now).total_seconds(), retry)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _ask(
        self,
        leaf: x509.Certificate,
        issuer: x509.Certificate,
        url: str,
        *,
        now: datetime,
        memo: Memo,
    ) -> Query:
        der = request_der(leaf, issuer)
        get_url = url.rstrip("/") + "/" + quote(base64.b64encode(der).decode(), safe="")
        method = self.settings.method
        if method is Method.AUTO:
            method = Method.GET if len(get_url) <= GET_URL_LIMIT else Method.POST
        timeout = self.settings.timeout.total_seconds()
        started = time.monotonic()
        deadline = started + timeout
        headers = {"Accept": "application/ocsp-response"}
        status: int | None = None
        try:
            if method is Method.GET:
                response = self._session().get(
                    get_url, headers=headers, timeout=timeout, stream=True, allow_redirects=False
                )
            else:
                headers["Content-Type"] = "application/ocsp-request"
                response = self._session().post(
                    url, data=der, headers=headers, timeout=timeout, stream=True,
                    allow_redirects=False,
                )  # fmt: skip
            with response:
                status = response.status_code
                body = bytearray()
                for chunk in response.iter_content(16384):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        too_large = f"answer larger than {MAX_ANSWER_BYTES} bytes"
                        return self._failed(
                            url, method, now, started, status, QueryError.TOO_LARGE, too_large
                        )
                    if time.monotonic() > deadline:
                        raise requests.Timeout(f"answer not complete within {timeout:g}s")
        except requests.Timeout as exc:
            return self._failed(url, method, now, started, status, QueryError.TIMEOUT,
                                f"no complete answer within {timeout:g}s ({exc})")  # fmt: skip
        except requests.RequestException as exc:
            return self._failed(url, method, now, started, status, QueryError.CONNECT_ERROR,
                                str(exc))  # fmt: skip
        latency = time.monotonic() - started
        if status != 200:
            return Query(url, method.value, now, latency, status, QueryError.HTTP_ERROR,
                         f"HTTP status {status}")  # fmt: skip
        facts: dict[str, Any] = {
            "leaf_serial": format(leaf.serial_number, "X"),
            "issuer_subject": issuer.subject.rfc4514_string(),
        }
        reason, detail = ocsp.judge_response(
            bytes(body), leaf, issuer, facts,
            now=now, skew=ocsp.DEFAULT_SKEW, warn_within=timedelta(0), memo=memo,
            source="responder's answer",
        )  # fmt: skip
        verdict = Verdict(state=reason.state, reason=reason, detail=detail, **facts)
        usable = bool(verdict.signature_valid) and verdict.cert_id_match is True
        return Query(
            url, method.value, now, latency, status,
            None if usable else QueryError.BAD_ANSWER, "" if usable else detail, verdict,
        )  # fmt: skip

    @staticmethod
    def _failed(
        url: str,
        method: Method,
        now: datetime,
        started: float,
        status: int | None,
        error: QueryError,
        detail: str,
    ) -> Query:
        return Query(url, method.value, now, time.monotonic() - started, status, error, detail)
