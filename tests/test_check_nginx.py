"""`staple-monitor check --json` against real nginx and a real `openssl ocsp` responder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Lab

pytestmark = pytest.mark.integration

# scenario -> (exit code, state, reason)
FIXED = {
    "good": (0, "ok", "ok"),
    "revoked": (2, "critical", "revoked"),
    "unknown": (2, "critical", "unknown_status"),
    "expired": (2, "critical", "expired"),
    "notyet": (2, "critical", "not_yet_valid"),
    "expiring": (1, "warning", "expiring_soon"),
    "badsig": (2, "critical", "bad_signature"),
    "delegated": (0, "ok", "ok"),
    "delegated_noeku": (2, "critical", "unauthorized_responder"),
    "wrongid": (2, "critical", "cert_id_mismatch"),
    "trylater": (2, "critical", "responder_error"),
}


@pytest.mark.parametrize(("scenario", "expected"), FIXED.items(), ids=list(FIXED))
def test_fixed_staples(lab: Lab, scenario: str, expected: tuple[int, str, str]) -> None:
    code, doc = lab.check_scenario(scenario, "--retry-delay", "0")
    (result,) = doc["results"]
    assert (code, result["state"], result["reason"]) == expected, result["detail"]
    assert doc["exit_code"] == code
    assert result["staple_present"] is True
    assert result["retried"] is False


def test_revoked_reports_time_and_reason(lab: Lab) -> None:
    _, doc = lab.check_scenario("revoked", "--retry-delay", "0")
    (result,) = doc["results"]
    assert result["cert_status"] == "revoked"
    assert result["revocation_reason"] == "keyCompromise"
    assert result["revocation_time"] is not None
    assert result["signature_valid"] is True


def test_delegated_responder_is_named(lab: Lab) -> None:
    _, doc = lab.check_scenario("delegated", "--retry-delay", "0")
    (result,) = doc["results"]
    assert result["signer"] == "delegated"
    assert "test OCSP responder" in result["signer_subject"]


def test_trylater_reports_response_status(lab: Lab) -> None:
    _, doc = lab.check_scenario("trylater", "--retry-delay", "0")
    assert doc["results"][0]["response_status"] == "tryLater"


@pytest.mark.parametrize(("scenario", "protocol"), [("live12", "TLSv1.2"), ("live13", "TLSv1.3")])
def test_live_stapling_needs_one_retry_then_ok(lab: Lab, scenario: str, protocol: str) -> None:
    # nginx fetches the staple from the responder on the first handshake only:
    # the first probe of a fresh server block has none, the retry has it.
    code, doc = lab.check_scenario(scenario)
    (result,) = doc["results"]
    assert (code, result["reason"]) == (0, "ok"), result["detail"]
    assert result["retried"] is True
    assert result["protocol"] == protocol
    assert result["signer"] == "delegated"  # openssl ocsp signs with the responder cert
    assert result["cert_status"] == "good"
    assert result["fresh"] is True
    # Now nginx has it cached: no retry needed.
    code, doc = lab.check_scenario(scenario)
    assert doc["results"][0]["retried"] is False
    assert code == 0


def test_forcing_a_version_the_server_lacks_is_a_tls_error(lab: Lab) -> None:
    code, doc = lab.check_scenario("live12", "--tls1.3")
    (result,) = doc["results"]
    assert (code, result["reason"]) == (2, "tls_error")
    assert "handshake" in result["detail"]


def test_forced_tls12(lab: Lab) -> None:
    code, doc = lab.check_scenario("good", "--tls1.2", "--retry-delay", "0")
    assert (code, doc["results"][0]["protocol"]) == (0, "TLSv1.2")


def test_stapling_off_is_no_staple_after_a_retry(lab: Lab) -> None:
    code, doc = lab.check_scenario("off", "--retry-delay", "100ms")
    (result,) = doc["results"]
    assert (code, result["state"], result["reason"]) == (1, "warning", "no_staple")
    assert result["retried"] is True
    assert result["staple_present"] is False


def test_must_staple_without_staple_is_critical(lab: Lab) -> None:
    code, doc = lab.check_scenario("must_off", "--retry-delay", "100ms")
    (result,) = doc["results"]
    assert (code, result["reason"]) == (2, "must_staple_violation")
    assert result["must_staple"] is True


def test_leaf_without_ocsp_url_is_its_own_ok_state(lab: Lab) -> None:
    code, doc = lab.check_scenario("noocsp")
    (result,) = doc["results"]
    assert (code, result["state"], result["reason"]) == (0, "ok", "no_ocsp_url")
    assert result["ocsp_urls"] == []
    assert result["retried"] is False  # nothing to wait for


def test_server_without_intermediate_is_issuer_missing(lab: Lab) -> None:
    code, doc = lab.check_scenario("leaf_only", "--retry-delay", "0")
    (result,) = doc["results"]
    assert (code, result["state"], result["reason"]) == (3, "unknown", "issuer_missing")


def test_chain_not_under_the_given_trust_store_is_untrusted(lab: Lab) -> None:
    code, doc = lab.check(
        f"lab.test:{lab.ports['good']}",
        "--address", "127.0.0.1",
        "--ca-file", str(lab.pki.path("other-root.pem")),
        "--retry-delay", "0",
    )  # fmt: skip
    (result,) = doc["results"]
    assert (code, result["reason"]) == (2, "untrusted_chain")
    assert result["chain_trusted"] is False


def test_one_bad_node_among_two_addresses(lab: Lab) -> None:
    code, doc = lab.check(
        f"lab.test:{lab.multi_port}",
        "--address", "127.0.0.2",
        "--address", "127.0.0.3",
        "--ca-file", str(lab.pki.path("root.pem")),
        "--retry-delay", "0",
    )  # fmt: skip
    by_address = {r["address"]: r["reason"] for r in doc["results"]}
    assert by_address == {"127.0.0.2": "ok", "127.0.0.3": "expired"}
    assert (code, doc["state"]) == (2, "critical")


def test_text_report_is_readable(lab: Lab) -> None:
    script = Path(sys.executable).with_name("staple-monitor")
    proc = subprocess.run(
        [str(script), "check", f"lab.test:{lab.ports['expiring']}", "--address", "127.0.0.1",
         "--ca-file", str(lab.pki.path("root.pem")), "--retry-delay", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    first, *rest = proc.stdout.splitlines()
    assert first.startswith("OCSP STAPLE WARNING - lab.test:")
    text = "\n".join(rest)
    assert "nextUpdate" in text
    assert "(in 1h" in text  # "in 1h 59m"
    assert "ago)" in text  # thisUpdate
    assert "signed by     issuer" in text
    assert "(signature valid)" in text
    assert "Must-Staple   no" in text
    assert "TLS           TLSv1.3" in text
