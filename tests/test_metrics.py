"""Rendering verdicts as metrics, asserted through a real registry (client_python's pattern)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.metrics import RESULT_METRICS, probe_exposition
from monitor.ocsp import CertStatus, Reason, ResponseStatus, State, Verdict, failure
from monitor.runner import Result

T0 = datetime(2026, 6, 1, tzinfo=UTC)


class _Parsed:
    """The exposition text parsed back with client_python's own parser."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.families = list(text_string_to_metric_families(text))

    def collect(self) -> list[Any]:
        return self.families

    def get_sample_value(self, name: str, labels: dict[str, str]) -> float | None:
        for fam in self.families:
            for s in fam.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return None


def _registry(verdict: Verdict) -> _Parsed:
    result = Result("a.test:443", "127.0.0.1", "a.test", verdict, T0, 0.25)
    return _Parsed(probe_exposition([result]))


LABELS = {"target": "a.test:443", "address": "127.0.0.1", "server_name": "a.test"}


def test_failed_probe_exports_only_what_exists() -> None:
    reg = _registry(failure(Reason.TIMEOUT, "too slow"))
    get = reg.get_sample_value
    assert get("ocsp_staple_probe_success", LABELS) == 0
    assert get("ocsp_staple_state", {**LABELS, "state": "critical", "reason": "timeout"}) == 1
    assert get("ocsp_staple_probe_duration_seconds", LABELS) == 0.25
    assert get("ocsp_staple_last_probe_timestamp_seconds", LABELS) == T0.timestamp()
    for name in (
        "present",
        "fresh",
        "signature_valid",
        "must_staple",
        "next_update_timestamp_seconds",
    ):
        assert get(f"ocsp_staple_{name}", LABELS) is None, name


def test_state_sets_have_one_series_per_value() -> None:
    verdict = Verdict(
        state=State.CRITICAL,
        reason=Reason.REVOKED,
        detail="",
        staple_present=True,
        response_status=ResponseStatus.SUCCESSFUL,
        cert_status=CertStatus.REVOKED,
        signature_valid=True,
        revocation_time=T0,
    )
    reg = _registry(verdict)
    values = {
        s.labels["status"]: s.value
        for m in reg.collect()
        if m.name == "ocsp_staple_cert_status"
        for s in m.samples
    }
    assert values == {"good": 0, "revoked": 1, "unknown": 0}
    assert (
        reg.get_sample_value("ocsp_staple_revocation_timestamp_seconds", LABELS) == T0.timestamp()
    )
    statuses = [
        s for m in reg.collect() if m.name == "ocsp_staple_response_status" for s in m.samples
    ]
    assert len(statuses) == len(ResponseStatus)


def test_unsigned_status_is_not_exported() -> None:
    verdict = Verdict(
        state=State.CRITICAL,
        reason=Reason.BAD_SIGNATURE,
        detail="",
        cert_status=CertStatus.GOOD,
        signature_valid=False,
    )
    reg = _registry(verdict)
    assert reg.get_sample_value("ocsp_staple_cert_status", {**LABELS, "status": "good"}) is None
    assert reg.get_sample_value("ocsp_staple_signature_valid", LABELS) == 0


def test_every_metric_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name, (kind, _) in RESULT_METRICS.items():
        full = f"ocsp_staple_{name}" + ("_total" if kind == "counter" else "")
        assert f"`{full}`" in readme, full
