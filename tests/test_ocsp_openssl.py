"""The verdict on responses made by `openssl ocsp` itself, including multi-certificate ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.lab import pki
from monitor.ocsp import CertStatus, Reason, Signer, evaluate
from monitor.probe import Capture
from monitor.trust import load_trust
from tests.lab import PKI, Responder, openssl_response

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("openssl"), pki.utcnow(), "http://127.0.0.1:9/")


def _judge(lab: PKI, staple: bytes, leaf: str) -> tuple[Reason, int | None, CertStatus | None]:
    capture = Capture(
        "127.0.0.1", 443, "lab.test", chain=(lab.leaves[leaf].cert, lab.inter.cert), staple=staple
    )
    v = evaluate(capture, load_trust(str(lab.path("root.pem"))), now=pki.utcnow())
    return v.reason, v.single_responses, v.cert_status


@pytest.mark.parametrize("signer", ["inter", "responder"])
def test_leaf_is_found_among_many_single_responses(lab: PKI, signer: str) -> None:
    responder = Responder(lab, port=0)
    responder.write_index(revoked={"other"})
    staple = openssl_response(lab, responder.index, ["other", "live", "fixed", "live"], signer)
    # The leaf we ask about is third of four: the walk must find it, not take the first.
    assert _judge(lab, staple, "fixed") == (Reason.OK, 4, CertStatus.GOOD)
    assert _judge(lab, staple, "other") == (Reason.REVOKED, 4, CertStatus.REVOKED)
    assert _judge(lab, staple, "must")[0] is Reason.CERT_ID_MISMATCH


def test_openssl_delegated_signer_is_recognised(lab: PKI) -> None:
    responder = Responder(lab, port=0)
    responder.write_index()
    staple = openssl_response(lab, responder.index, ["fixed"], "responder")
    capture = Capture(
        "127.0.0.1",
        443,
        "lab.test",
        chain=(lab.leaves["fixed"].cert, lab.inter.cert),
        staple=staple,
    )
    v = evaluate(capture, load_trust(str(lab.path("root.pem"))), now=pki.utcnow())
    assert (v.reason, v.signer) == (Reason.OK, Signer.DELEGATED)


def test_index_file_is_what_openssl_reads(lab: PKI) -> None:
    # Guards the lab itself: a wrong index format would make every live test meaningless.
    responder = Responder(lab, port=0)
    responder.write_index(revoked={"fixed"})
    assert Path(responder.index).read_text().count("\n") == len(lab.leaves)
    staple = openssl_response(lab, responder.index, ["fixed"])
    assert _judge(lab, staple, "fixed")[0] is Reason.REVOKED
