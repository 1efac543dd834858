"""The verdict on crafted captures, with a fixed clock: every reason and every RFC step."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as cocsp
from cryptography.x509.verification import Store

from monitor import ocsp
from monitor.lab import pki
from monitor.ocsp import CertStatus, Reason, ResponseStatus, Signer, State, evaluate
from monitor.probe import Capture, ProbeError
from monitor.trust import Trust, load_trust

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
URL = "http://127.0.0.1:9/"


class World:
    """A PKI built at NOW, and helpers to make captures about its leaf."""

    def __init__(self, key_type: str = "ec") -> None:
        self.root = pki.make_root("unit root", NOW, key_type=key_type)
        self.inter = pki.make_intermediate("unit CA", self.root, NOW, key_type=key_type)
        self.leaf = pki.make_leaf(["unit.test"], self.inter, NOW, ocsp_url=URL)
        self.trust = Trust(anchors=(self.root.cert,), source="unit", store=Store([self.root.cert]))

    def capture(self, staple: bytes | None, leaf: pki.Issued | None = None, **kw: Any) -> Capture:
        leaf = leaf or self.leaf
        fields: dict[str, Any] = {
            "chain": (leaf.cert, self.inter.cert),
            "staple": staple,
            "protocol": "TLSv1.3",
        }
        fields.update(kw)
        return Capture("127.0.0.1", 443, "unit.test", **fields)

    def response(self, leaf: pki.Issued | None = None, **kw: Any) -> bytes:
        args: dict[str, Any] = {
            "signer": self.inter,
            "this_update": NOW - HOUR,
            "next_update": NOW + 7 * DAY,
        }
        args.update(kw)
        return pki.make_response((leaf or self.leaf).cert, self.inter.cert, **args)

    def judge(self, staple: bytes | None, **kw: Any) -> ocsp.Verdict:
        return evaluate(self.capture(staple), self.trust, now=NOW, **kw)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_good_staple_is_ok_with_every_fact(world: World) -> None:
    v = world.judge(world.response())
    assert (v.state, v.reason) == (State.OK, Reason.OK)
    assert v.cert_status is CertStatus.GOOD
    assert v.response_status is ResponseStatus.SUCCESSFUL
    assert v.signer is Signer.ISSUER
    assert v.signature_valid is True
    assert v.cert_id_match is True
    assert v.chain_trusted is True
    assert v.fresh is True
    assert v.this_update == NOW - HOUR
    assert v.next_update == NOW + 7 * DAY
    assert v.seconds_to_next_update == (7 * DAY).total_seconds()
    assert v.ocsp_urls == (URL,)
    assert v.must_staple is False
    assert v.leaf_serial == format(world.leaf.cert.serial_number, "X")
    assert v.issuer_subject == world.inter.cert.subject.rfc4514_string()


def test_rsa_pkcs1_signatures_verify() -> None:
    w = World("rsa")
    assert w.judge(w.response()).reason is Reason.OK
    forged = pki.make_root("unit CA", NOW, key_type="rsa")
    assert w.judge(w.response(signer=forged)).reason is Reason.BAD_SIGNATURE


def test_ed25519_responder_signatures_verify(world: World) -> None:
    # Web PKI chains cannot be Ed25519 (the chain verifier refuses it), but a
    # delegated responder key can be.
    responder = pki.make_responder("ed responder", world.inter, NOW, key_type="ed25519")
    v = world.judge(world.response(signer=responder, include_signer=True))
    assert (v.reason, v.signer) == (Reason.OK, Signer.DELEGATED)


def test_responder_id_by_key_is_matched(world: World) -> None:
    v = world.judge(world.response(by_key=True))
    assert v.reason is Reason.OK
    assert v.responder_id is not None
    assert v.responder_id.startswith("key:")


def test_sha256_certid_is_matched_under_its_own_algorithm(world: World) -> None:
    assert world.judge(world.response(hash_algorithm=hashes.SHA256())).reason is Reason.OK


def test_response_for_another_certificate_is_a_mismatch(world: World) -> None:
    other = pki.make_leaf(["o.test"], world.inter, NOW, ocsp_url=URL)
    v = world.judge(world.response(leaf=other))
    assert (v.state, v.reason, v.cert_id_match) == (State.CRITICAL, Reason.CERT_ID_MISMATCH, False)
    assert format(other.cert.serial_number, "X") in v.detail


def test_same_serial_from_another_issuer_is_a_mismatch(world: World) -> None:
    # A CA with another name and key issues a leaf with the very same serial.
    other_ca = pki.make_intermediate("other CA", world.root, NOW)
    twin = (
        x509.CertificateBuilder()
        .subject_name(world.leaf.cert.subject)
        .issuer_name(other_ca.cert.subject)
        .public_key(world.leaf.key.public_key())
        .serial_number(world.leaf.cert.serial_number)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(other_ca.key, hashes.SHA256())
    )
    staple = pki.make_response(
        twin, other_ca.cert, other_ca, this_update=NOW - HOUR, next_update=NOW + DAY
    )
    assert world.judge(staple).reason is Reason.CERT_ID_MISMATCH


def test_forged_signature_under_the_issuers_name_is_bad(world: World) -> None:
    forged = pki.make_root("unit CA", NOW)  # same subject as the issuer, other key
    v = world.judge(world.response(signer=forged))
    assert (v.reason, v.signature_valid, v.signer) == (Reason.BAD_SIGNATURE, False, Signer.ISSUER)


def test_tampered_response_bytes_fail_the_signature(world: World) -> None:
    good = world.response()
    # Flip a bit inside nextUpdate's GeneralizedTime digits: still parses, no longer signed.
    stamp = (NOW + 7 * DAY).strftime("%Y%m%d%H%M%S").encode()
    i = good.index(stamp)
    tampered = good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1 :]
    assert world.judge(tampered).reason is Reason.BAD_SIGNATURE


def test_delegated_responder_with_eku_is_accepted(world: World) -> None:
    responder = pki.make_responder("unit responder", world.inter, NOW)
    v = world.judge(world.response(signer=responder, include_signer=True))
    assert (v.reason, v.signer) == (Reason.OK, Signer.DELEGATED)
    assert v.signer_subject is not None
    assert "unit responder" in v.signer_subject


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no_eku", "id-kp-OCSPSigning"),
        ("other_issuer", "not issued by"),
        ("expired", "not valid now"),
        ("not_included", "neither the issuer nor"),
    ],
)
def test_unauthorised_delegated_responders(world: World, case: str, words: str) -> None:
    if case == "no_eku":
        responder = pki.make_responder("r", world.inter, NOW, ocsp_signing=False)
    elif case == "other_issuer":
        stranger = pki.make_root("stranger", NOW)
        responder = pki.make_responder("r", stranger, NOW)
    else:
        # Made two years ago with a one-year life.
        responder = pki.make_responder("r", world.inter, NOW - 730 * DAY)
    staple = world.response(signer=responder, include_signer=case != "not_included")
    v = world.judge(staple)
    assert (v.state, v.reason) == (State.CRITICAL, Reason.UNAUTHORIZED_RESPONDER)
    assert words in v.detail
    assert v.signature_valid is None  # never checked with an unauthorised key


def test_revoked(world: World) -> None:
    v = world.judge(
        world.response(
            status=cocsp.OCSPCertStatus.REVOKED,
            revocation_time=NOW - 2 * DAY,
            revocation_reason=x509.ReasonFlags.superseded,
        )
    )
    assert (v.state, v.reason, v.cert_status) == (
        State.CRITICAL,
        Reason.REVOKED,
        CertStatus.REVOKED,
    )
    assert v.revocation_time == NOW - 2 * DAY
    assert v.revocation_reason == "superseded"


def test_unknown_status(world: World) -> None:
    v = world.judge(world.response(status=cocsp.OCSPCertStatus.UNKNOWN))
    assert (v.state, v.reason) == (State.CRITICAL, Reason.UNKNOWN_STATUS)


@pytest.mark.parametrize(
    ("this_update", "next_update", "reason"),
    [
        (NOW - 8 * DAY, NOW - DAY, Reason.EXPIRED),
        (NOW - 8 * DAY, NOW, Reason.EXPIRED),  # now < nextUpdate is required
        (NOW - 8 * DAY, NOW + timedelta(seconds=1), Reason.EXPIRING_SOON),
        (NOW + 2 * HOUR, NOW + 8 * DAY, Reason.NOT_YET_VALID),
        (NOW + timedelta(minutes=5), NOW + 8 * DAY, Reason.OK),  # within the 5m skew
        (NOW + timedelta(minutes=5, seconds=1), NOW + 8 * DAY, Reason.NOT_YET_VALID),
        (NOW - 6 * DAY, NOW + 23 * HOUR, Reason.EXPIRING_SOON),
        (NOW - 6 * DAY, NOW + 24 * HOUR, Reason.OK),
        (NOW - HOUR, None, Reason.OK),
        (NOW - 2 * DAY, None, Reason.EXPIRED),
    ],
)
def test_time_window(
    world: World, this_update: datetime, next_update: datetime | None, reason: Reason
) -> None:
    v = world.judge(world.response(this_update=this_update, next_update=next_update))
    assert v.reason is reason, v.detail
    assert v.fresh is (reason in (Reason.OK, Reason.EXPIRING_SOON))


def test_skew_and_warn_within_are_configurable(world: World) -> None:
    staple = world.response(this_update=NOW + 20 * timedelta(minutes=1), next_update=NOW + DAY)
    assert world.judge(staple).reason is Reason.NOT_YET_VALID
    v = world.judge(staple, skew=timedelta(minutes=30), warn_within=timedelta(hours=1))
    assert v.reason is Reason.OK


def test_expired_staple_still_reports_seconds_to_next_update(world: World) -> None:
    v = world.judge(world.response(this_update=NOW - 8 * DAY, next_update=NOW - DAY))
    assert v.seconds_to_next_update == -DAY.total_seconds()
    assert v.fresh is False


@pytest.mark.parametrize(
    "status",
    [
        cocsp.OCSPResponseStatus.TRY_LATER,
        cocsp.OCSPResponseStatus.INTERNAL_ERROR,
        cocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        cocsp.OCSPResponseStatus.SIG_REQUIRED,
        cocsp.OCSPResponseStatus.UNAUTHORIZED,
    ],
)
def test_unsuccessful_response_is_a_responder_error(
    world: World, status: cocsp.OCSPResponseStatus
) -> None:
    v = world.judge(pki.unsuccessful(status))
    assert (v.state, v.reason) == (State.CRITICAL, Reason.RESPONDER_ERROR)
    assert v.response_status is not None
    assert v.response_status is not ResponseStatus.SUCCESSFUL
    assert v.cert_status is None


@pytest.mark.parametrize(
    "staple", [b"\x00", b"garbage", b"\x30\x03\x0a\x01\x00", b"\x30\x82\xff\xff"]
)
def test_malformed_staple(world: World, staple: bytes) -> None:
    v = world.judge(staple)
    assert (v.state, v.reason, v.staple_present) == (State.CRITICAL, Reason.MALFORMED_STAPLE, True)


def test_no_staple(world: World) -> None:
    v = world.judge(None)
    assert (v.state, v.reason, v.staple_present) == (State.WARNING, Reason.NO_STAPLE, False)


def test_must_staple_without_staple(world: World) -> None:
    leaf = pki.make_leaf(["unit.test"], world.inter, NOW, ocsp_url=URL, must_staple=True)
    v = evaluate(world.capture(None, leaf=leaf), world.trust, now=NOW)
    assert (v.state, v.reason, v.must_staple) == (
        State.CRITICAL,
        Reason.MUST_STAPLE_VIOLATION,
        True,
    )


def test_no_ocsp_url_is_ok_but_said(world: World) -> None:
    leaf = pki.make_leaf(["unit.test"], world.inter, NOW, ocsp_url=None)
    v = evaluate(world.capture(None, leaf=leaf), world.trust, now=NOW)
    assert (v.state, v.reason, v.ocsp_urls) == (State.OK, Reason.NO_OCSP_URL, ())


def test_staple_without_ocsp_url_is_still_judged(world: World) -> None:
    leaf = pki.make_leaf(["unit.test"], world.inter, NOW, ocsp_url=None)
    staple = world.response(leaf=leaf, this_update=NOW - 8 * DAY, next_update=NOW - DAY)
    v = evaluate(world.capture(staple, leaf=leaf), world.trust, now=NOW)
    assert v.reason is Reason.EXPIRED


def test_issuer_not_sent_is_issuer_missing(world: World) -> None:
    capture = world.capture(world.response(), chain=(world.leaf.cert,))
    v = evaluate(capture, world.trust, now=NOW)
    assert (v.state, v.reason, v.chain_trusted) == (State.UNKNOWN, Reason.ISSUER_MISSING, False)
    assert v.cert_status is None  # never guessed


def test_leaf_issued_directly_by_an_anchor_needs_no_chain(world: World) -> None:
    leaf = pki.make_leaf(["unit.test"], world.root, NOW, ocsp_url=URL)
    staple = pki.make_response(
        leaf.cert, world.root.cert, world.root, this_update=NOW - HOUR, next_update=NOW + DAY * 7
    )
    v = evaluate(world.capture(staple, chain=(leaf.cert,)), world.trust, now=NOW)
    assert v.reason is Reason.OK


def test_chain_to_another_root_is_untrusted(world: World) -> None:
    stranger = World()
    v = evaluate(world.capture(world.response()), stranger.trust, now=NOW)
    assert (v.state, v.reason, v.chain_trusted) == (State.CRITICAL, Reason.UNTRUSTED_CHAIN, False)


def test_expired_leaf_is_untrusted(world: World) -> None:
    v = evaluate(world.capture(world.response()), world.trust, now=NOW + 400 * DAY)
    assert v.reason is Reason.UNTRUSTED_CHAIN


def test_name_mismatch_is_untrusted(world: World) -> None:
    capture = replace(world.capture(world.response()), server_name="other.test")
    v = evaluate(capture, world.trust, now=NOW)
    assert v.reason is Reason.UNTRUSTED_CHAIN
    assert v.detail.startswith("chain does not verify")


def test_empty_chain_is_a_tls_error(world: World) -> None:
    v = evaluate(world.capture(None, chain=()), world.trust, now=NOW)
    assert v.reason is Reason.TLS_ERROR


@pytest.mark.parametrize("error", list(ProbeError))
def test_probe_errors_pass_through(world: World, error: ProbeError) -> None:
    capture = Capture("127.0.0.1", 443, None, error=error, error_detail="boom")
    v = evaluate(capture, world.trust, now=NOW)
    assert (v.reason.value, v.state, v.detail) == (error.value, State.CRITICAL, "boom")


def test_states_and_exit_codes() -> None:
    assert [s.exit_code for s in State] == [0, 1, 2, 3]
    assert Reason.DNS_ERROR.state is State.UNKNOWN
    assert Reason.NO_OCSP_URL.state is State.OK
    # Every reason has a state, and the README documents each reason.
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    for reason in Reason:
        assert isinstance(reason.state, State)
        assert f"`{reason.value}`" in readme, f"README does not document {reason.value}"


def test_verdict_is_immutable_and_serialisable(world: World) -> None:
    v = world.judge(world.response())
    with pytest.raises(AttributeError):
        v.reason = Reason.REVOKED  # type: ignore[misc]
    d = v.as_dict()
    assert d["reason"] == "ok"
    assert d["this_update"] == (NOW - HOUR).isoformat()


def test_system_trust_store_loads() -> None:
    trust = load_trust(None)
    assert len(trust.anchors) > 10


def test_bad_ca_file_names_the_file(tmp_path: Any) -> None:
    from monitor.trust import TrustError

    missing = tmp_path / "nope.pem"
    with pytest.raises(TrustError, match=r"nope\.pem: cannot read CA file"):
        load_trust(str(missing))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(TrustError, match=r"empty\.pem: "):
        load_trust(str(empty))


def test_remembered_steps_hold_only_within_their_time_window() -> None:
    # The verdict remembers chain and staple checks by their bytes; the same capture
    # judged at other times must still reach the verdict each time calls for.
    w = World()
    leaf = pki.make_leaf(["unit.test"], w.inter, NOW, ocsp_url=URL, days=30)
    capture = w.capture(w.response(leaf, next_update=NOW + 7 * DAY), leaf=leaf)
    assert evaluate(capture, w.trust, now=NOW).reason is Reason.OK
    hits = w.trust.memo.hits
    assert evaluate(capture, w.trust, now=NOW).reason is Reason.OK
    assert w.trust.memo.hits > hits  # the second look was remembered, not recomputed
    assert evaluate(capture, w.trust, now=NOW + 8 * DAY).reason is Reason.EXPIRED
    late = evaluate(capture, w.trust, now=NOW + 31 * DAY)
    assert late.reason is Reason.UNTRUSTED_CHAIN, late.detail
    early = evaluate(capture, w.trust, now=NOW - 2 * DAY)
    assert early.reason is Reason.UNTRUSTED_CHAIN, early.detail
    assert evaluate(capture, w.trust, now=NOW).reason is Reason.OK


def test_remembered_delegated_responder_expires_with_its_certificate() -> None:
    w = World()
    responder = pki.make_responder("unit responder", w.inter, NOW - 300 * DAY)  # ends NOW+65d
    leaf = pki.make_leaf(["unit.test"], w.inter, NOW, ocsp_url=URL, days=200)
    staple = w.response(leaf, signer=responder, include_signer=True, next_update=NOW + 150 * DAY)
    capture = w.capture(staple, leaf=leaf)
    assert evaluate(capture, w.trust, now=NOW).reason is Reason.OK
    after = evaluate(capture, w.trust, now=NOW + 70 * DAY)
    assert after.reason is Reason.UNAUTHORIZED_RESPONDER, after.detail
    assert "not valid now" in after.detail
    assert evaluate(capture, w.trust, now=NOW).reason is Reason.OK


def test_memo_is_bounded() -> None:
    from monitor.memo import Memo

    memo = Memo(limit=3)
    for i in range(10):
        memo.put(i, str(i))
    assert len(memo) == 3
    assert memo.get(0) is None
    assert memo.get(9) == "9"


# The cross-check with the CA's responder: ocsp.cross_check on judged answers.


def _answer(world: World, **kw: Any) -> ocsp.Verdict:
    """The responder's answer about the leaf, judged like a staple."""
    return world.judge(world.response(**kw), warn_within=timedelta(0))


def test_responder_revoked_while_staple_good_is_revoked_at_responder(world: World) -> None:
    staple = world.judge(world.response())
    answer = _answer(
        world,
        status=cocsp.OCSPCertStatus.REVOKED,
        revocation_time=NOW - 2 * HOUR,
        revocation_reason=x509.ReasonFlags.key_compromise,
        this_update=NOW,
    )
    v = ocsp.cross_check(staple, answer)
    assert (v.state, v.reason) == (State.CRITICAL, Reason.REVOKED_AT_RESPONDER)
    assert "revoked at" in v.detail
    assert "keyCompromise" in v.detail
    assert "staples a 'good' response" in v.detail
    assert v.cert_status is CertStatus.GOOD  # the staple's own facts are kept
    assert v.staple_lag_seconds == HOUR.total_seconds()


def test_stale_signed_revocation_still_counts(world: World) -> None:
    staple = world.judge(world.response())
    answer = _answer(
        world,
        status=cocsp.OCSPCertStatus.REVOKED,
        revocation_time=NOW - 9 * DAY,
        this_update=NOW - 8 * DAY,
        next_update=NOW - DAY,
    )
    assert answer.reason is Reason.REVOKED
    assert ocsp.cross_check(staple, answer).reason is Reason.REVOKED_AT_RESPONDER


def test_responder_revoked_without_a_staple_is_revoked_at_responder(world: World) -> None:
    staple = world.judge(None)
    assert staple.reason is Reason.NO_STAPLE
    answer = _answer(world, status=cocsp.OCSPCertStatus.REVOKED, revocation_time=NOW - HOUR)
    v = ocsp.cross_check(staple, answer)
    assert v.reason is Reason.REVOKED_AT_RESPONDER
    assert "no_staple" in v.detail


def test_critical_staple_keeps_its_own_reason(world: World) -> None:
    staple = world.judge(world.response(this_update=NOW - 8 * DAY, next_update=NOW - DAY))
    answer = _answer(world, status=cocsp.OCSPCertStatus.REVOKED, revocation_time=NOW - HOUR)
    assert ocsp.cross_check(staple, answer).reason is Reason.EXPIRED


@pytest.mark.parametrize(
    ("staple_age", "threshold", "reason"),
    [
        (HOUR, timedelta(hours=12), Reason.OK),
        (13 * HOUR, timedelta(hours=12), Reason.STAPLE_LAGGING),
        (2 * HOUR, HOUR, Reason.STAPLE_LAGGING),
    ],
)
def test_staple_lagging_behind_the_responder(
    world: World, staple_age: timedelta, threshold: timedelta, reason: Reason
) -> None:
    staple = world.judge(world.response(this_update=NOW - staple_age))
    answer = _answer(world, this_update=NOW)
    v = ocsp.cross_check(staple, answer, lag_warning=threshold)
    assert v.reason is reason
    assert v.staple_lag_seconds == staple_age.total_seconds()
    if reason is Reason.STAPLE_LAGGING:
        assert v.state is State.WARNING
        assert "refresh looks stuck" in v.detail


@pytest.mark.parametrize("trouble", ["badsig", "wrongid", "trylater", "missing"])
def test_responder_trouble_never_changes_a_good_staple(world: World, trouble: str) -> None:
    staple = world.judge(world.response())
    other = pki.make_leaf(["unit.test"], world.inter, NOW, ocsp_url=URL)
    revoked: dict[str, Any] = {
        "status": cocsp.OCSPCertStatus.REVOKED,
        "revocation_time": NOW - HOUR,
    }
    answer: ocsp.Verdict | None = None
    if trouble == "badsig":
        answer = _answer(world, signer=pki.make_root("unit CA", NOW), **revoked)
    elif trouble == "wrongid":
        answer = _answer(world, leaf=other, **revoked)
    elif trouble == "trylater":
        answer = world.judge(pki.unsuccessful(cocsp.OCSPResponseStatus.TRY_LATER))
    assert ocsp.cross_check(staple, answer) == staple
