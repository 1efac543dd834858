"""Property tests: no staple or chain bytes make the verdict raise or accept a forgery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp as cocsp
from cryptography.x509.verification import Store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.lab import pki
from monitor.ocsp import Reason, State, Verdict, evaluate
from monitor.probe import Capture
from monitor.trust import Trust

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ROOT = pki.make_root("prop root", NOW)
CA = pki.make_intermediate("prop CA", ROOT, NOW)
LEAF = pki.make_leaf(["prop.test"], CA, NOW, ocsp_url="http://127.0.0.1:9/")
TRUST = Trust((ROOT.cert,), "prop", Store([ROOT.cert]))
GOOD = pki.make_response(
    LEAF.cert,
    CA.cert,
    CA,
    this_update=NOW - timedelta(hours=1),
    next_update=NOW + timedelta(days=7),
)
SIGNED = cocsp.load_der_ocsp_response(GOOD)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judge(
    staple: bytes | None, chain: tuple[x509.Certificate, ...] = (LEAF.cert, CA.cert)
) -> Verdict:
    return evaluate(
        Capture("127.0.0.1", 443, "prop.test", chain=chain, staple=staple), TRUST, now=NOW
    )


def well_formed(v: Verdict) -> None:
    assert isinstance(v.reason, Reason)
    assert v.state is v.reason.state
    assert isinstance(v.state, State)
    assert v.detail


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(staple: bytes) -> None:
    v = judge(staple)
    well_formed(v)
    assert v.reason is not Reason.OK


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif len(data) > 1:
            del data[i]
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


@SETTINGS
@given(mutations())
def test_mutated_staples_never_raise_and_forgeries_are_never_ok(staple: bytes) -> None:
    v = judge(staple)
    well_formed(v)
    if v.reason is Reason.OK:
        # Accepted only if what was signed, and the signature, are untouched.
        parsed = cocsp.load_der_ocsp_response(staple)
        assert parsed.tbs_response_bytes == SIGNED.tbs_response_bytes
        assert parsed.signature == SIGNED.signature


@SETTINGS
@given(st.integers(0, 2), st.binary(min_size=1, max_size=2))
def test_mutated_chain_certificates_never_raise(which: int, junk: bytes) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = [LEAF.cert, CA.cert, ROOT.cert]
    der = bytearray(certs[which].public_bytes(Encoding.DER))
    at = int.from_bytes(junk, "big") % len(der)
    der[at] ^= 0x55
    try:
        mutated = x509.load_der_x509_certificate(bytes(der))
    except (ValueError, x509.InvalidVersion):
        return  # not a certificate: the probe turns such bytes into tls_error
    chain = list(certs[:2])
    chain[min(which, 1)] = mutated
    well_formed(judge(GOOD, tuple(chain)))


REGRESSIONS = sorted((Path(__file__).parent / "fuzz" / "regressions").glob("*.der"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_inputs_fuzzing_once_crashed_on_give_a_verdict(path: Path) -> None:
    # responder-name-bitstring: a responderID name whose attribute is a BIT STRING
    # under another OID made cryptography raise TypeError out of the verdict.
    v = judge(path.read_bytes())
    well_formed(v)
    assert v.reason is Reason.MALFORMED_STAPLE, v.detail
