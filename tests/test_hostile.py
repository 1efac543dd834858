"""Hostile peers on 127.0.0.1: each gets a clear reason within the timeout, and the daemon
keeps probing everyone else on time with bounded memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.lab import pki
from monitor.lab.demo import TLSServer
from monitor.runner import CheckSpec, check_address
from monitor.trust import load_trust
from tests.conftest import Lab
from tests.lab import PKI, DaemonProcess, Responder, openssl_response
from tests.peers import drip, endless_records, peer, random_bytes, reset, silent

pytestmark = pytest.mark.integration

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def hostile_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    lab = PKI(tmp_path_factory.mktemp("hostile"), pki.utcnow(), "http://127.0.0.1:9/")
    # 199 more certificates from the same CA, for a response that covers 200 of them.
    for i in range(199):
        leaf = pki.make_leaf([f"many{i}.test"], lab.inter, lab.now, ocsp_url=lab.ocsp_url)
        lab.leaves[f"many{i}"] = leaf
        pki.write(lab.path(f"many{i}-only.pem"), leaf.cert_pem())
    return lab


def _huge_cert(lab: PKI, size: int) -> x509.Certificate:
    """A CA-signed certificate padded with ``size`` bytes in a private extension."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "padding")]))
        .issuer_name(lab.inter.cert.subject)
        .public_key(lab.inter.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(lab.now - timedelta(days=1))
        .not_valid_after(lab.now + timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\0" * size),
            critical=False,
        )
        .sign(lab.inter.key, hashes.SHA256())
    )


@contextmanager
def tls_peer(
    lab: PKI, staple: Callable[[], bytes], extra: list[x509.Certificate] | None = None
) -> Iterator[int]:
    chain = [lab.inter] + [pki.Issued(c, lab.inter.key) for c in (extra or [])]
    server = TLSServer(lab.leaves["fixed"], chain, staple)
    try:
        yield server.port
    finally:
        server.stop()


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def garbage_response(size: int) -> bytes:
    """An OCSPResponse envelope (successful, id-pkix-ocsp-basic) around ``size`` random bytes.

    Servers built on OpenSSL only staple bytes that parse as an OCSPResponse, so this is
    the most garbage a hostile server can staple. Crafted by hand here, on purpose: no
    library will build a malformed response.
    """
    basic_oid = bytes.fromhex("06092b0601050507300101")  # 1.3.6.1.5.5.7.48.1.1
    response_bytes = _der(0x30, basic_oid + _der(0x04, os.urandom(size)))
    return _der(0x30, bytes.fromhex("0a0100") + _der(0xA0, response_bytes))


def _many_staple(lab: PKI) -> bytes:
    responder = Responder(lab, port=0)
    responder.write_index()
    names = [f"many{i}" for i in range(199)] + ["fixed"]  # the leaf's answer is the last of 200
    return openssl_response(lab, responder.index, names)


def _judge(lab: PKI, port: int, tls: str = "any") -> tuple[str, float, str]:
    from monitor.probe import TLSVersion

    spec = CheckSpec(
        host="lab.test",
        port=port,
        timeout=timedelta(seconds=TIMEOUT),
        retry_no_staple=timedelta(0),
        tls_version=TLSVersion(tls),
    )
    trust = load_trust(str(lab.path("root.pem")))
    t0 = time.monotonic()
    result = check_address(spec, "127.0.0.1", trust, clock=lambda: datetime.now(UTC))
    return result.verdict.reason.value, time.monotonic() - t0, result.verdict.detail


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (silent, "timeout"),
        (drip, "timeout"),
        (random_bytes, "tls_error"),
        (reset, "tls_error"),
        (endless_records, "tls_error"),
    ],
    ids=[
        "accepts-never-speaks",
        "drips-a-byte-a-second",
        "random-bytes",
        "reset",
        "endless-records",
    ],
)
def test_hostile_tcp_peers(hostile_pki: PKI, behaviour: object, reason: str) -> None:
    with peer(behaviour) as port:  # type: ignore[arg-type]
        got, elapsed, detail = _judge(hostile_pki, port)
    assert got == reason, detail
    assert elapsed < TIMEOUT + 1.5
    assert detail  # a sentence, never empty


def test_chain_of_several_megabytes_is_refused(hostile_pki: PKI) -> None:
    huge = _huge_cert(hostile_pki, 4 * 1024 * 1024)
    with tls_peer(hostile_pki, lambda: b"", extra=[huge]) as port:
        got, elapsed, detail = _judge(hostile_pki, port)
    # OpenSSL caps the certificate list (100 KiB by default): the handshake fails, the
    # megabytes are never held.
    assert got == "tls_error", detail
    assert "excessive message size" in detail
    assert elapsed < TIMEOUT + 1.5


@pytest.mark.parametrize("tls", ["tls1.2", "tls1.3"])
def test_staple_of_several_megabytes_of_garbage_is_refused(hostile_pki: PKI, tls: str) -> None:
    garbage = garbage_response(4 * 1024 * 1024)
    with tls_peer(hostile_pki, lambda: garbage) as port:
        got, elapsed, detail = _judge(hostile_pki, port, tls)
    # TLS 1.2: our client refuses a CertificateStatus over its size cap; TLS 1.3: the
    # server's own OpenSSL gives up on a Certificate message that large. Never held.
    assert got == "tls_error", detail
    assert detail.startswith("TLS handshake failed: ")
    assert elapsed < TIMEOUT + 1.5


def test_small_garbage_staple_is_malformed(hostile_pki: PKI) -> None:
    garbage = garbage_response(1024)
    with tls_peer(hostile_pki, lambda: garbage) as port:
        got, _, detail = _judge(hostile_pki, port)
    assert got == "malformed_staple", detail


def test_staple_covering_many_certificates(hostile_pki: PKI) -> None:
    staple = _many_staple(hostile_pki)
    assert len(staple) > 16 * 1024  # larger than a TLS 1.2 CertificateStatus may be
    with tls_peer(hostile_pki, lambda: staple) as port:
        got, _, detail = _judge(hostile_pki, port, "tls1.3")
        got12, _, detail12 = _judge(hostile_pki, port, "tls1.2")
    assert got == "ok", detail  # found the leaf's answer, 200th of 200
    assert got12 == "tls_error", detail12  # OpenSSL refuses a CertificateStatus over 16 KiB


def _p99_within(metrics: object, seconds: float) -> bool:
    count = metrics.value("ocsp_staple_scheduler_lag_seconds_count")  # type: ignore[attr-defined]
    within = metrics.value("ocsp_staple_scheduler_lag_seconds_bucket", le=str(seconds))  # type: ignore[attr-defined]
    return bool(count) and within / count >= 0.99


def test_daemon_keeps_time_and_memory_among_hostile_peers(
    lab: Lab, hostile_pki: PKI, tmp_path: Path
) -> None:
    good = ["good", "expired", "revoked", "off", "delegated"]
    with ExitStack() as stack:
        ports = {
            name: stack.enter_context(peer(b))
            for name, b in [("silent", silent), ("drip", drip), ("random", random_bytes),
                            ("reset", reset), ("endless", endless_records)]
        }  # fmt: skip
        huge = _huge_cert(hostile_pki, 4 * 1024 * 1024)
        ports["hugechain"] = stack.enter_context(tls_peer(hostile_pki, lambda: b"", [huge]))
        blob = garbage_response(4 * 1024 * 1024)
        ports["hugestaple"] = stack.enter_context(tls_peer(hostile_pki, lambda: blob))
        lines = [
            "defaults: {interval: 1s, timeout: 3s, retry_no_staple: 0,"
            f" ca_file: {lab.pki.path('root.pem')}}}",
            "workers: 16",
            "targets:",
        ]
        lines += [
            f"  - {{host: lab.test, port: {lab.ports[n]}, addresses: [127.0.0.1],"
            f' labels: {{kind: "{n}"}}}}'
            for n in good
        ]
        lines += [
            f"  - {{host: 127.0.0.1, port: {p}, labels: {{kind: hostile-{n}}}}}"
            for n, p in ports.items()
        ]
        config = tmp_path / "hostile.yaml"
        config.write_text("\n".join(lines) + "\n")
        daemon = DaemonProcess(config)
        try:
            daemon.wait_for(lambda m: len(m.find("ocsp_staple_state")) == len(good) + len(ports))
            first = daemon.scrape()
            rss_start = first.value("process_resident_memory_bytes")
            time.sleep(10)
            m = daemon.scrape()
        finally:
            daemon.stop()
    # Every good target ran about once a second although seven peers tie up workers.
    for name in good:
        runs = m.find("ocsp_staple_probes_total", kind=name)[0]
        assert runs >= 9, (name, runs)
    assert _p99_within(m, 1.0), m.text
    # Each hostile peer has its clear reason.
    expected = {
        "silent": "timeout",
        "drip": "timeout",
        "random": "tls_error",
        "reset": "tls_error",
        "endless": "tls_error",
        "hugechain": "tls_error",
        "hugestaple": "tls_error",
    }
    for name, reason in expected.items():
        assert m.find("ocsp_staple_state", kind=f"hostile-{name}", reason=reason) == [1], name
    # Megabytes on offer, yet memory stays flat and small.
    rss_end = m.value("process_resident_memory_bytes")
    assert rss_start is not None
    assert rss_end is not None
    assert rss_end < 150 * 1024 * 1024, rss_end
    assert rss_end - rss_start < 20 * 1024 * 1024, (rss_start, rss_end)
