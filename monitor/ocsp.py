"""The verdict: what a captured handshake says about the server's OCSP staple.

Pure: no sockets and no clock of its own. ``evaluate(capture, trust, now=...)``
walks the client-side acceptance steps of RFC 6960 section 3.2 in order and
stops at the first one that fails, returning a frozen ``Verdict`` whose ``state``
and ``reason`` come from closed enums. Facts gathered before the failing step
stay in the verdict; facts after it are None ("not checked").
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    SignatureAlgorithmOID,
)
from cryptography.x509.verification import PolicyBuilder, VerificationError

from monitor.durations import format_duration
from monitor.memo import Memo
from monitor.probe import Capture
from monitor.trust import Trust

DEFAULT_SKEW = timedelta(minutes=5)
DEFAULT_WARN_WITHIN = timedelta(hours=24)
# RFC 6960 2.4: a response without nextUpdate means "newer information is always
# available"; we accept such a staple for one day after its thisUpdate (the
# lifetime mozilla::pkix gives it), then call it expired.
NO_NEXT_UPDATE_MAX_AGE = timedelta(days=1)


class State(enum.StrEnum):
    """Overall state, in the Nagios plugin sense."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        """The Nagios plugin exit code for this state."""
        return _EXIT_CODES[self]

    @property
    def severity(self) -> int:
        """Rank for "worst first": critical > warning > unknown > ok."""
        return _SEVERITY[self]


_EXIT_CODES = {State.OK: 0, State.WARNING: 1, State.CRITICAL: 2, State.UNKNOWN: 3}
_SEVERITY = {State.OK: 0, State.UNKNOWN: 1, State.WARNING: 2, State.CRITICAL: 3}


class Reason(enum.StrEnum):
    """Why the state is what it is. Values are metric label values; README documents each."""

    OK = "ok"
    NO_OCSP_URL = "no_ocsp_url"
    NO_STAPLE = "no_staple"
    MUST_STAPLE_VIOLATION = "must_staple_violation"
    MALFORMED_STAPLE = "malformed_staple"
    RESPONDER_ERROR = "responder_error"
    CERT_ID_MISMATCH = "cert_id_mismatch"
    UNAUTHORIZED_RESPONDER = "unauthorized_responder"
    BAD_SIGNATURE = "bad_signature"
    REVOKED = "revoked"
    UNKNOWN_STATUS = "unknown_status"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    EXPIRING_SOON = "expiring_soon"
    ISSUER_MISSING = "issuer_missing"
    UNTRUSTED_CHAIN = "untrusted_chain"
    TLS_ERROR = "tls_error"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    DNS_ERROR = "dns_error"
    # From the cross-check with the CA's responder (monitor.responder, cross_check below).
    REVOKED_AT_RESPONDER = "revoked_at_responder"
    STAPLE_LAGGING = "staple_lagging"

    @property
    def state(self) -> State:
        """The state this reason puts a target in."""
        return _REASON_STATE.get(self, State.CRITICAL)


_REASON_STATE = {
    Reason.OK: State.OK,
    # Several CAs have stopped running OCSP: nothing to staple is not the server's fault.
    Reason.NO_OCSP_URL: State.OK,
    Reason.NO_STAPLE: State.WARNING,
    Reason.EXPIRING_SOON: State.WARNING,
    Reason.STAPLE_LAGGING: State.WARNING,
    # We cannot judge the staple at all: say so rather than guess.
    Reason.ISSUER_MISSING: State.UNKNOWN,
    Reason.DNS_ERROR: State.UNKNOWN,
}


class ResponseStatus(enum.StrEnum):
    """OCSPResponseStatus (RFC 6960 4.2.1), spelled as in the RFC."""

    SUCCESSFUL = "successful"
    MALFORMED_REQUEST = "malformedRequest"
    INTERNAL_ERROR = "internalError"
    TRY_LATER = "tryLater"
    SIG_REQUIRED = "sigRequired"
    UNAUTHORIZED = "unauthorized"


_RESPONSE_STATUS = {
    ocsp.OCSPResponseStatus.SUCCESSFUL: ResponseStatus.SUCCESSFUL,
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: ResponseStatus.MALFORMED_REQUEST,
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: ResponseStatus.INTERNAL_ERROR,
    ocsp.OCSPResponseStatus.TRY_LATER: ResponseStatus.TRY_LATER,
    ocsp.OCSPResponseStatus.SIG_REQUIRED: ResponseStatus.SIG_REQUIRED,
    ocsp.OCSPResponseStatus.UNAUTHORIZED: ResponseStatus.UNAUTHORIZED,
}


class CertStatus(enum.StrEnum):
    """certStatus of the SingleResponse for the leaf."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


_CERT_STATUS = {
    ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: CertStatus.UNKNOWN,
}


class Signer(enum.StrEnum):
    """Who signed the response."""

    ISSUER = "issuer"  # the CA that issued the leaf
    DELEGATED = "delegated"  # a responder certificate carried in the response


@dataclass(frozen=True)
class Verdict:
    """The judgement on one handshake.

    Every Optional field is None when the step that would fill it was not reached
    (an earlier step failed) or does not apply (no staple, no nextUpdate). Staple
    facts (cert_status, times) are what the staple *claims*; they are trustworthy
    only when ``signature_valid`` is True.
    """

    state: State
    reason: Reason
    detail: str
    leaf_subject: str | None = None
    leaf_serial: str | None = None  # hex, as openssl prints it
    leaf_not_after: datetime | None = None
    must_staple: bool | None = None
    ocsp_urls: tuple[str, ...] = ()
    issuer_subject: str | None = None
    chain_trusted: bool | None = None
    staple_present: bool | None = None
    staple_bytes: int | None = None
    response_status: ResponseStatus | None = None
    single_responses: int | None = None
    cert_id_match: bool | None = None
    responder_id: str | None = None
    signer: Signer | None = None
    signer_subject: str | None = None
    signature_valid: bool | None = None
    cert_status: CertStatus | None = None
    revocation_time: datetime | None = None
    revocation_reason: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    produced_at: datetime | None = None
    fresh: bool | None = None
    seconds_to_next_update: float | None = None
    # How much older the staple's thisUpdate is than the responder's latest answer's
    # (negative: the staple is newer); None without both.
    staple_lag_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (ISO 8601 times, enum values as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def failure(reason: Reason, detail: str) -> Verdict:
    """A verdict for a probe that never produced a handshake (DNS, connect, TLS)."""
    return Verdict(state=reason.state, reason=reason, detail=detail)


class _Walk:
    """Facts gathered so far; ``stop`` freezes them into a Verdict."""

    def __init__(self) -> None:
        self.facts: dict[str, Any] = {}

    def stop(self, reason: Reason, detail: str) -> Verdict:
        return Verdict(state=reason.state, reason=reason, detail=detail, **self.facts)


def evaluate(
    capture: Capture,
    trust: Trust,
    *,
    now: datetime,
    skew: timedelta = DEFAULT_SKEW,
    warn_within: timedelta = DEFAULT_WARN_WITHIN,
) -> Verdict:
    """Judge one capture at time ``now`` (timezone-aware, UTC).

    The costly steps that depend only on the bytes (reading the chain, verifying it,
    checking the staple's CertID, signer and signature) are remembered in
    ``trust.memo`` with the window of time in which they hold; the clock-dependent
    steps run every time.
    """
    return judge_capture(capture, trust, now=now, skew=skew, warn_within=warn_within).verdict


@dataclass(frozen=True)
class Judged:
    """A verdict with what the walk found on the way: the leaf's verified issuer and the
    leaf's SHA-256 fingerprint (None when the walk stopped before a trusted path)."""

    verdict: Verdict
    issuer: x509.Certificate | None = None
    leaf_print: bytes | None = None


def judge_capture(
    capture: Capture,
    trust: Trust,
    *,
    now: datetime,
    skew: timedelta = DEFAULT_SKEW,
    warn_within: timedelta = DEFAULT_WARN_WITHIN,
) -> Judged:
    """``evaluate``, also giving the issuer it verified (for the responder cross-check)."""
    if capture.error is not None:
        return Judged(failure(Reason(capture.error.value), capture.error_detail))
    walk = _Walk()
    f = walk.facts
    if not capture.chain:
        return Judged(walk.stop(Reason.TLS_ERROR, "the server sent no certificate"))
    memo = trust.memo
    prints = tuple(_fingerprint(c) for c in capture.chain)
    step = _memoized(memo, ("chain", prints), now, lambda: _read_chain(capture.chain))
    f.update(step.facts)
    if step.stop is not None:
        return Judged(walk.stop(*step.stop))
    leaf = capture.chain[0]

    # Who issued the leaf, proven by a verified path to a trust anchor. Without it
    # neither the CertID nor the signature can be checked (RFC 6960 3.2 steps 1-3).
    name = _verification_subject(capture)
    step = _memoized(
        memo, ("path", name, prints), now, lambda: _verify_path(capture, name, trust, now)
    )
    f.update(step.facts)
    if step.stop is not None:
        return Judged(walk.stop(*step.stop))
    issuer = (
        step.issuer if isinstance(step.issuer, x509.Certificate) else capture.chain[step.issuer]
    )
    issuer_print = prints[step.issuer] if isinstance(step.issuer, int) else _fingerprint(issuer)

    def found(reason: Reason, detail: str) -> Judged:
        return Judged(walk.stop(reason, detail), issuer, prints[0])

    f["staple_present"] = capture.staple is not None
    if capture.staple is None:
        if f["must_staple"]:
            # RFC 7633: a Must-Staple certificate served without a staple is a hard
            # failure in clients that enforce it.
            return found(
                Reason.MUST_STAPLE_VIOLATION,
                "the certificate requires stapling (TLS Feature status_request) but the"
                " server sent no staple",
            )
        if not f["ocsp_urls"]:
            return found(
                Reason.NO_OCSP_URL,
                "the certificate names no OCSP responder, so there is nothing to staple",
            )
        return found(Reason.NO_STAPLE, "the server sent no OCSP staple")
    f["staple_bytes"] = len(capture.staple)
    return found(
        *judge_response(
            capture.staple,
            leaf,
            issuer,
            f,
            now=now,
            skew=skew,
            warn_within=warn_within,
            memo=memo,
            prints=(prints[0], issuer_print),
            source="staple",
        )
    )


def judge_response(
    der: bytes,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    facts: dict[str, Any],
    *,
    now: datetime,
    skew: timedelta,
    warn_within: timedelta,
    memo: Memo,
    prints: tuple[bytes, bytes] | None = None,
    source: str = "staple",
) -> tuple[Reason, str]:
    """Judge a DER OCSPResponse about ``leaf`` (issued by ``issuer``) at ``now``.

    Used for the stapled response and for the responder's own answer, so both get
    the same checks. Adds what it finds to ``facts`` (which must already hold
    ``leaf_serial`` and ``issuer_subject``) and returns where the walk stops.
    ``source`` names the response in the details ("staple", "responder's answer").
    """
    leaf_print, issuer_print = prints or (_fingerprint(leaf), _fingerprint(issuer))
    key = ("response", hashlib.sha256(der).digest(), leaf_print, issuer_print, source)
    step = _memoized(
        memo,
        key,
        now,
        lambda: _read_response(der, leaf, issuer, facts["leaf_serial"], facts["issuer_subject"],
                               now, source),
    )  # fmt: skip
    facts.update(step.facts)
    if step.stop is not None:
        return step.stop

    this_update: datetime = facts["this_update"]
    next_update: datetime | None = facts["next_update"]
    # RFC 6960 3.2 steps 4 and 5: thisUpdate recent enough, nextUpdate in the future.
    not_yet = this_update > now + skew
    if next_update is not None:
        expired = now >= next_update
        facts["seconds_to_next_update"] = (next_update - now).total_seconds()
    else:
        expired = now - this_update > NO_NEXT_UPDATE_MAX_AGE
    facts["fresh"] = not not_yet and not expired

    if facts["cert_status"] is CertStatus.REVOKED:
        when = facts["revocation_time"].isoformat()
        why = f"; reason {facts['revocation_reason']}" if facts["revocation_reason"] else ""
        return Reason.REVOKED, f"the {source} says the certificate was revoked at {when}{why}"
    if facts["cert_status"] is CertStatus.UNKNOWN:
        return Reason.UNKNOWN_STATUS, "the responder does not know this certificate"
    if not_yet:
        return Reason.NOT_YET_VALID, (
            f"thisUpdate {this_update.isoformat()} is later than now plus the allowed skew"
            f" of {format_duration(skew)}"
        )
    if expired:
        if next_update is None:
            return Reason.EXPIRED, (
                f"no nextUpdate and thisUpdate {this_update.isoformat()} is older than"
                f" {format_duration(NO_NEXT_UPDATE_MAX_AGE)}"
            )
        return Reason.EXPIRED, f"nextUpdate {next_update.isoformat()} has passed"
    if next_update is not None and next_update - now < warn_within:
        return Reason.EXPIRING_SOON, (
            f"nextUpdate {next_update.isoformat()} is within {format_duration(warn_within)}:"
            " the server has not fetched a fresh response"
        )
    return Reason.OK, f"a fresh, correctly signed 'good' {source} for this certificate"


_EVER = datetime.min.replace(tzinfo=UTC)
_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Step:
    """What a costly step worked out from bytes: the facts it adds, where the walk
    stops (None: it goes on), the issuer it found (an index into the chain or an
    anchor), and the window of time in which all that holds. A window that ends
    before it starts means "true only now": such a step is never remembered."""

    facts: tuple[tuple[str, Any], ...]
    stop: tuple[Reason, str] | None = None
    issuer: int | x509.Certificate = 0
    valid_from: datetime = _EVER
    valid_until: datetime = _NEVER


def _only_now(facts: dict[str, Any], reason: Reason, detail: str) -> _Step:
    return _Step(tuple(facts.items()), (reason, detail), valid_from=_NEVER, valid_until=_EVER)


def _memoized(memo: Memo, key: Any, now: datetime, work: Callable[[], _Step]) -> _Step:
    step = memo.get(key)
    if isinstance(step, _Step) and step.valid_from <= now <= step.valid_until:
        return step
    step = work()
    if step.valid_from <= step.valid_until:
        memo.put(key, step)
    return step


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _read_chain(chain: tuple[x509.Certificate, ...]) -> _Step:
    for position, cert in enumerate(chain):
        problem = _unparseable(cert)
        if problem:
            what = "the server's certificate" if position == 0 else f"chain certificate {position}"
            return _Step((), (Reason.UNTRUSTED_CHAIN, f"{what} cannot be parsed: {problem}"))
    leaf = chain[0]
    return _Step(
        (
            ("leaf_subject", leaf.subject.rfc4514_string()),
            ("leaf_serial", format(leaf.serial_number, "X")),
            ("leaf_not_after", leaf.not_valid_after_utc),
            ("must_staple", _must_staple(leaf)),
            ("ocsp_urls", _ocsp_urls(leaf)),
        )
    )


def _verify_path(
    capture: Capture, name: x509.verification.Subject, trust: Trust, now: datetime
) -> _Step:
    leaf, intermediates = capture.chain[0], list(capture.chain[1:])
    try:
        verifier = PolicyBuilder().store(trust.store).time(now).build_server_verifier(name)
        path = verifier.verify(leaf, intermediates)
    except (VerificationError, ValueError) as exc:
        f: dict[str, Any] = {"chain_trusted": False}
        named = [c for c in capture.chain[1:] if c.subject == leaf.issuer]
        if not named and not trust.anchors_named(leaf.issuer):
            return _only_now(
                f,
                Reason.ISSUER_MISSING,
                f"the server did not send the issuer certificate ({leaf.issuer.rfc4514_string()})"
                " and the trust store does not hold it; the staple cannot be checked",
            )
        return _only_now(f, Reason.UNTRUSTED_CHAIN, f"chain does not verify: {exc}")
    # A leaf that is itself an anchor is its own issuer.
    found = path[1] if len(path) > 1 else path[0]
    issuer: int | x509.Certificate = next(
        (i for i, c in enumerate(capture.chain) if c == found),
        next((a for a in trust.anchors if a == found), found),
    )
    # The path holds as long as every certificate on it is valid.
    return _Step(
        (("chain_trusted", True), ("issuer_subject", found.subject.rfc4514_string())),
        issuer=issuer,
        valid_from=max(c.not_valid_before_utc for c in path),
        valid_until=min(c.not_valid_after_utc for c in path),
    )


def _read_response(
    der: bytes,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    leaf_serial: str,
    issuer_subject: str,
    now: datetime,
    source: str,
) -> _Step:
    """The steps of RFC 6960 3.2 that depend on the bytes alone (and on the time only
    through a delegated responder certificate's validity)."""
    f: dict[str, Any] = {}

    def stop(reason: Reason, detail: str) -> _Step:
        return _Step(tuple(f.items()), (reason, detail))

    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        return stop(Reason.MALFORMED_STAPLE, f"the {source} is not a DER OCSPResponse: {exc}")
    status = _RESPONSE_STATUS[response.response_status]
    f["response_status"] = status
    if status is not ResponseStatus.SUCCESSFUL:
        return stop(
            Reason.RESPONDER_ERROR,
            f"the {source} has status {status.value} and carries no certificate status",
        )
    try:
        singles = list(response.responses)
        f["responder_id"] = _responder_id(response)
        f["produced_at"] = response.produced_at_utc
    except (ValueError, TypeError) as exc:
        # cryptography builds names lazily and raises TypeError for some malformed
        # attribute types (found by fuzzing): the response is unreadable either way.
        return stop(Reason.MALFORMED_STAPLE, f"the {source} cannot be read: {exc}")
    f["single_responses"] = len(singles)

    # RFC 6960 3.2 step 1: the certificate identified in the response is the leaf.
    single = _single_for(leaf, issuer, singles)
    if single is None:
        f["cert_id_match"] = False
        serials = ", ".join(sorted({format(s.serial_number, "X") for s in singles})) or "none"
        return stop(
            Reason.CERT_ID_MISMATCH,
            f"the {source} is not about this certificate (serial {leaf_serial} from"
            f" {issuer_subject}); it covers serial(s) {serials}",
        )
    f["cert_id_match"] = True
    f["cert_status"] = _CERT_STATUS[single.certificate_status]
    f["this_update"] = single.this_update_utc
    f["next_update"] = single.next_update_utc
    f["revocation_time"] = None
    f["revocation_reason"] = None
    if f["cert_status"] is CertStatus.REVOKED:
        f["revocation_time"] = single.revocation_time_utc
        reason = single.revocation_reason
        f["revocation_reason"] = reason.value if reason is not None else None

    # RFC 6960 3.2 steps 3 and 4.2.2.2: the signer is the issuer or a responder it authorised.
    signer, signer_problem, valid_from, valid_until = _authorised_signer(response, issuer, now)

    def held(stop: tuple[Reason, str] | None = None) -> _Step:
        # From here on the outcome holds while the signer's authority does.
        return _Step(tuple(f.items()), stop, valid_from=valid_from, valid_until=valid_until)

    if signer is None:
        return held((Reason.UNAUTHORIZED_RESPONDER, signer_problem))
    f["signer"] = Signer.ISSUER if signer is issuer else Signer.DELEGATED
    f["signer_subject"] = signer.subject.rfc4514_string()

    # RFC 6960 3.2 step 2: the signature on the response is valid.
    f["signature_valid"] = _signature_ok(response, signer)
    if not f["signature_valid"]:
        return held(
            (
                Reason.BAD_SIGNATURE,
                f"the {source}'s signature does not verify with the key of {f['signer_subject']}",
            )
        )
    return held()


DEFAULT_LAG_WARNING = timedelta(hours=12)
# A responder's answer is only used for its status once it proves, by its signature
# and CertID, that the CA said it about this certificate.
_ANSWERED = frozenset(
    {Reason.OK, Reason.REVOKED, Reason.UNKNOWN_STATUS, Reason.EXPIRING_SOON, Reason.EXPIRED,
     Reason.NOT_YET_VALID}
)  # fmt: skip


def cross_check(
    staple: Verdict, responder: Verdict | None, *, lag_warning: timedelta = DEFAULT_LAG_WARNING
) -> Verdict:
    """The staple's verdict in the light of the CA responder's own (judged) answer.

    - The responder says revoked while the server's staple is good or absent (the
      staple's verdict is ok or a warning): ``revoked_at_responder``, critical. The
      server is telling clients "good" about a certificate its CA has revoked. A
      signed revocation counts even from a stale answer: revocation is final.
    - The staple is good but its thisUpdate is older than the responder's fresh
      answer's by more than ``lag_warning``: ``staple_lagging``, a warning (the
      server's refresh is stuck).
    - No usable answer (responder down, slow, garbage): the staple's verdict stands;
      the trouble shows on the responder's own metrics.
    """
    if responder is None or responder.reason not in _ANSWERED:
        return staple
    lag = None
    if staple.this_update is not None and responder.this_update is not None:
        lag = (responder.this_update - staple.this_update).total_seconds()
    out = replace(staple, staple_lag_seconds=lag)
    if responder.cert_status is CertStatus.REVOKED and staple.state in (State.OK, State.WARNING):
        when = responder.revocation_time.isoformat() if responder.revocation_time else "?"
        why = f" (reason {responder.revocation_reason})" if responder.revocation_reason else ""
        served = (
            f"the server staples a 'good' response from {staple.this_update.isoformat()}"
            if staple.cert_status is CertStatus.GOOD and staple.this_update is not None
            else f"the server's own verdict is {staple.reason.value}"
        )
        return replace(
            out,
            state=State.CRITICAL,
            reason=Reason.REVOKED_AT_RESPONDER,
            detail=f"the CA's responder says the certificate was revoked at {when}{why}; {served}",
        )
    stamp = staple.this_update.isoformat() if staple.this_update else "?"
    if (
        staple.reason is Reason.OK
        and responder.reason is Reason.OK
        and lag is not None
        and lag > lag_warning.total_seconds()
    ):
        return replace(
            out,
            state=State.WARNING,
            reason=Reason.STAPLE_LAGGING,
            detail=f"the staple's thisUpdate {stamp}"
            f" is {format_duration(timedelta(seconds=int(lag)))} older than the responder's latest"
            f" answer (more than {format_duration(lag_warning)}): the server's refresh looks stuck",
        )
    return out


def _unparseable(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot be used, or None. cryptography parses fields lazily, so a
    malformed certificate from a hostile server only fails when a field is read."""
    try:
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        _ = (cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
        cert.public_key()
        _ = cert.extensions
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        return str(exc)
    return None


def staple_expected(leaf: x509.Certificate) -> bool:
    """Whether a server could staple for ``leaf``: it names a responder or demands a staple."""
    try:
        return _must_staple(leaf) or bool(_ocsp_urls(leaf))
    except ValueError:
        return False


def _must_staple(leaf: x509.Certificate) -> bool:
    try:
        ext = leaf.extensions.get_extension_for_class(x509.TLSFeature)
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in ext.value


def _ocsp_urls(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        str(d.access_location.value)
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    )


def _verification_subject(capture: Capture) -> x509.verification.Subject:
    return _subject(capture.server_name or capture.address)


@functools.lru_cache(maxsize=65536)
def _subject(name: str) -> x509.verification.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_hash(cert: x509.Certificate) -> bytes:
    # RFC 6960 4.2.1 KeyHash: SHA-1 of the subjectPublicKey BIT STRING value, which is
    # exactly RFC 5280 4.2.1.2 method (1) for a key identifier.
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _responder_id(response: ocsp.OCSPResponse) -> str:
    if response.responder_name is not None:
        return response.responder_name.rfc4514_string()
    key_hash = response.responder_key_hash or b""
    return "key:" + key_hash.hex()


def _single_for(
    leaf: x509.Certificate, issuer: x509.Certificate, singles: list[ocsp.OCSPSingleResponse]
) -> ocsp.OCSPSingleResponse | None:
    """The SingleResponse whose CertID names the leaf, hashed as the response says."""
    expected: dict[str, tuple[bytes, bytes]] = {}
    for single in singles:
        if single.serial_number != leaf.serial_number:
            continue
        try:
            algorithm = single.hash_algorithm
            if algorithm.name not in expected:
                request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm).build()
                expected[algorithm.name] = (request.issuer_name_hash, request.issuer_key_hash)
        except (UnsupportedAlgorithm, ValueError):
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == expected[algorithm.name]:
            return single
    return None


def _names_signer(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    return response.responder_key_hash == _key_hash(cert)


def _authorised_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
) -> tuple[x509.Certificate | None, str, datetime, datetime]:
    """The response's signer, or None and why not, and the window in which that holds."""
    if _names_signer(response, issuer):
        return issuer, "", _EVER, _NEVER
    candidates = [c for c in response.certificates if _names_signer(response, c)]
    if not candidates:
        return (
            None,
            (
                f"the response was signed by {_responder_id(response)}, which is neither the"
                " issuer nor a responder certificate included in the response"
            ),
            _EVER,
            _NEVER,
        )
    problems = []
    timed = False  # a candidate was refused for the time alone: the answer holds only now
    for cand in candidates:
        # RFC 6960 4.2.2.2: issued directly by the CA, with id-kp-OCSPSigning, valid now.
        who = cand.subject.rfc4514_string()
        try:
            cand.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            problems.append(f"responder certificate {who} was not issued by the leaf's issuer")
            continue
        try:
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            has_eku = ExtendedKeyUsageOID.OCSP_SIGNING in eku
        except (x509.ExtensionNotFound, ValueError):
            has_eku = False
        if not has_eku:
            problems.append(f"responder certificate {who} lacks the id-kp-OCSPSigning key usage")
            continue
        if not cand.not_valid_before_utc <= now <= cand.not_valid_after_utc:
            timed = True
            problems.append(
                f"responder certificate {who} is not valid now (valid"
                f" {cand.not_valid_before_utc.isoformat()} to"
                f" {cand.not_valid_after_utc.isoformat()})"
            )
            continue
        if timed:
            return cand, "", _NEVER, _EVER
        return cand, "", cand.not_valid_before_utc, cand.not_valid_after_utc
    return None, "; ".join(problems), (_NEVER if timed else _EVER), (_EVER if timed else _NEVER)


def _signature_ok(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    data, sig = response.tbs_response_bytes, response.signature
    try:
        algorithm = response.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and isinstance(algorithm, hashes.HashAlgorithm):
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pad: padding.AsymmetricPadding = padding.PSS(
                    padding.MGF1(algorithm), padding.PSS.AUTO
                )
            else:
                pad = padding.PKCS1v15()
            key.verify(sig, data, pad, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            algorithm, hashes.HashAlgorithm
        ):
            key.verify(sig, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(sig, data)
        elif isinstance(key, dsa.DSAPublicKey) and isinstance(algorithm, hashes.HashAlgorithm):
            key.verify(sig, data, algorithm)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True
