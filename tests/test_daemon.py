"""The daemon as a process against the real nginx lab: metrics, /probe, reload, logs, shutdown."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Lab
from tests.lab import DaemonProcess, Metrics, free_port, need_binary
from tests.peers import peer, silent

pytestmark = pytest.mark.integration

# scenario -> (state, reason) the daemon must export for it
EXPECTED = {
    "live12": ("ok", "ok"),
    "good": ("ok", "ok"),
    "delegated": ("ok", "ok"),
    "revoked": ("critical", "revoked"),
    "unknown": ("critical", "unknown_status"),
    "expired": ("critical", "expired"),
    "notyet": ("critical", "not_yet_valid"),
    "expiring": ("warning", "expiring_soon"),
    "badsig": ("critical", "bad_signature"),
    "delegated_noeku": ("critical", "unauthorized_responder"),
    "wrongid": ("critical", "cert_id_mismatch"),
    "trylater": ("critical", "responder_error"),
    "off": ("warning", "no_staple"),
    "must_off": ("critical", "must_staple_violation"),
    "noocsp": ("ok", "no_ocsp_url"),
    "leaf_only": ("unknown", "issuer_missing"),
}


def write_config(lab: Lab, path: Path, scenarios: list[str], extra: str = "") -> Path:
    lines = [
        "defaults:",
        "  interval: 1m",
        "  timeout: 5s",
        "  retry_no_staple: 500ms",
        f"  ca_file: {lab.pki.path('root.pem')}",
        "targets:",
    ]
    for name in scenarios:
        lines += [
            "  - host: lab.test",
            f"    port: {lab.ports[name]}",
            "    addresses: [127.0.0.1]",
            f'    labels: {{scenario: "{name}", team: lab}}',
        ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def target(lab: Lab, scenario: str) -> str:
    return f"lab.test:{lab.ports[scenario]}"


@pytest.fixture(scope="module")
def daemon(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    work = tmp_path_factory.mktemp("daemon")
    closed = free_port()
    extra = (
        f"  - host: lab.test\n    port: {lab.multi_port}\n"
        "    addresses: [127.0.0.2, 127.0.0.3]\n"
        f"  - host: 127.0.0.1\n    port: {closed}\n    labels: {{scenario: closed}}\n"
    )
    config = write_config(lab, work / "daemon.yaml", list(EXPECTED), extra)
    proc = DaemonProcess(config)
    n = len(EXPECTED) + 3  # the multi-address target has two addresses
    proc.wait_for(lambda m: len(m.find("ocsp_staple_state")) == n)
    yield proc
    proc.stop()


@pytest.mark.parametrize(("scenario", "expected"), EXPECTED.items(), ids=list(EXPECTED))
def test_state_per_scenario(
    lab: Lab, daemon: DaemonProcess, scenario: str, expected: tuple[str, str]
) -> None:
    m = daemon.scrape()
    labels = {"target": target(lab, scenario), "address": "127.0.0.1"}
    state, reason = expected
    assert m.value("ocsp_staple_state", **labels, state=state, reason=reason) == 1
    assert len(m.find("ocsp_staple_state", **labels)) == 1  # one series per target and address
    assert m.value("ocsp_staple_probe_success", **labels) == 1
    assert m.value("ocsp_staple_probes_total", **labels) == 1
    # The target's own labels ride along on every series.
    assert m.find("ocsp_staple_probe_success", **labels, scenario=scenario, team="lab") == [1]


def test_good_staple_values(lab: Lab, daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    labels = {"target": target(lab, "good"), "server_name": "lab.test"}
    staple = lab.pki.staples()  # same times as the served file, within the lab's second
    assert m.value("ocsp_staple_present", **labels) == 1
    assert m.value("ocsp_staple_signature_valid", **labels) == 1
    assert m.value("ocsp_staple_fresh", **labels) == 1
    assert m.value("ocsp_staple_cert_status", **labels, status="good") == 1
    assert m.value("ocsp_staple_cert_status", **labels, status="revoked") == 0
    assert m.value("ocsp_staple_response_status", **labels, status="successful") == 1
    assert m.value("ocsp_staple_response_status", **labels, status="tryLater") == 0
    next_update = m.value("ocsp_staple_next_update_timestamp_seconds", **labels)
    assert next_update == (lab.pki.now.timestamp() + 7 * 86400)
    assert m.value("ocsp_staple_this_update_timestamp_seconds", **labels) == (
        lab.pki.now.timestamp() - 3600
    )
    assert m.value("ocsp_staple_produced_at_timestamp_seconds", **labels) is not None
    assert m.value("ocsp_staple_must_staple", **labels) == 0
    assert m.value("ocsp_staple_certificate_not_after_timestamp_seconds", **labels) == (
        lab.pki.leaves["fixed"].cert.not_valid_after_utc.timestamp()
    )
    # Good staples have no revocation time: absent, never 0.
    assert m.value("ocsp_staple_revocation_timestamp_seconds", **labels) is None
    assert m.value("ocsp_staple_probe_failures_total", **labels) is None
    assert staple  # the lab can still make its staples


def test_revoked_and_broken_staples(lab: Lab, daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    revoked = {"target": target(lab, "revoked")}
    assert m.value("ocsp_staple_cert_status", **revoked, status="revoked") == 1
    when = m.value("ocsp_staple_revocation_timestamp_seconds", **revoked)
    assert when == lab.pki.now.timestamp() - 86400
    assert m.value("ocsp_staple_probe_failures_total", **revoked, reason="revoked") == 1
    expired = {"target": target(lab, "expired")}
    assert m.value("ocsp_staple_fresh", **expired) == 0
    # A forged "good" is not exported as a certificate status at all.
    badsig = {"target": target(lab, "badsig")}
    assert m.value("ocsp_staple_signature_valid", **badsig) == 0
    assert m.find("ocsp_staple_cert_status", **badsig) == []
    trylater = {"target": target(lab, "trylater")}
    assert m.value("ocsp_staple_response_status", **trylater, status="tryLater") == 1
    assert m.find("ocsp_staple_next_update_timestamp_seconds", **trylater) == []


def test_missing_values_are_absent(lab: Lab, daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    off = {"target": target(lab, "off")}
    assert m.value("ocsp_staple_present", **off) == 0
    assert m.value("ocsp_staple_probe_retried", **off) == 1
    for name in ("fresh", "signature_valid", "next_update_timestamp_seconds", "cert_status"):
        assert m.find(f"ocsp_staple_{name}", **off) == [], name
    assert m.value("ocsp_staple_must_staple", target=target(lab, "must_off")) == 1
    closed = [s for s in m.samples if s.labels.get("scenario") == "closed"]
    names = {s.name for s in closed}
    assert "ocsp_staple_present" not in names
    assert m.find("ocsp_staple_probe_success", scenario="closed") == [0]
    assert m.find("ocsp_staple_state", scenario="closed", reason="connect_error") == [1]


def test_one_broken_node_of_two(lab: Lab, daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    t = f"lab.test:{lab.multi_port}"
    assert m.find("ocsp_staple_state", target=t, address="127.0.0.2", reason="ok") == [1]
    assert m.find("ocsp_staple_state", target=t, address="127.0.0.3", reason="expired") == [1]


def test_daemon_health_metrics(daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    assert m.value("ocsp_staple_targets_configured") == len(EXPECTED) + 2
    assert m.value("ocsp_staple_config_last_reload_successful") == 1
    assert m.value("ocsp_staple_config_last_reload_success_timestamp_seconds") is not None
    assert m.value("ocsp_staple_probes_in_flight") == 0
    assert m.value("ocsp_staple_scheduler_lag_seconds_count") == len(EXPECTED) + 2
    assert len(m.find("ocsp_staple_build_info", version="0.1.0")) == 1
    assert m.value("process_resident_memory_bytes") is not None


def test_promtool_accepts_the_real_output(daemon: DaemonProcess) -> None:
    promtool = need_binary("promtool")
    text = daemon.get("/metrics").text
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_probe_endpoint_returns_only_that_probe(lab: Lab, daemon: DaemonProcess) -> None:
    response = daemon.get("/probe", params={"target": target(lab, "revoked")})
    assert response.status_code == 200
    m = Metrics(response.text)
    states = m.find("ocsp_staple_state")
    assert states == [1]
    assert m.value("ocsp_staple_state", reason="revoked", target=target(lab, "revoked")) == 1
    assert m.find("ocsp_staple_probes_total") == []  # no counters in a one-off probe
    # The configured target's own labels, from the configuration (never from the query).
    assert m.find("ocsp_staple_state", scenario="revoked", team="lab") == [1]
    promtool = need_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=response.text,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_probe_debug_returns_the_log(lab: Lab, daemon: DaemonProcess) -> None:
    response = daemon.get("/probe", params={"target": target(lab, "expired"), "debug": "true"})
    assert response.status_code == 200
    assert response.text.startswith("Logs for the probe:\nprobing lab.test:")
    assert "verdict: critical (expired)" in response.text
    assert "ocsp_staple_state{" in response.text


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({}, 400, "target parameter is missing"),
        ({"target": "lab.test:abc"}, 400, "port must be an integer"),
        ({"target": "::1"}, 400, "IPv6 address must be in brackets"),
        ({"target": "example.com:443"}, 403, "neither configured nor matched by probe_allow"),
        ({"target": "lab.test:443", "team": "evil"}, 400, "unknown parameter(s): team"),
    ],
)
def test_probe_refuses_bad_requests(
    daemon: DaemonProcess, params: dict[str, str], status: int, words: str
) -> None:
    response = daemon.get("/probe", params=params)
    assert response.status_code == status
    assert words in response.text


def test_status_page_lists_worst_first(lab: Lab, daemon: DaemonProcess) -> None:
    page = daemon.get("/").text
    assert page.index("CRITICAL") < page.index("WARNING") < page.index(">OK<")
    assert "must_staple_violation" in page
    assert "nextUpdate" in page
    assert daemon.get("/healthz").text == "ok\n"
    assert daemon.get("/nope").status_code == 404
    assert daemon.get("/-/reload").status_code == 405


def test_state_changes_are_logged_once(daemon: DaemonProcess) -> None:
    changes = [e for e in daemon.logs() if e.get("event") == "state_change"]
    keys = [(e["target"], e["address"]) for e in changes]
    assert len(keys) == len(set(keys)) == len(EXPECTED) + 3
    expired = next(e for e in changes if e["reason"] == "expired" and e["address"] == "127.0.0.1")
    assert (expired["from"], expired["state"], expired["level"]) == ("none", "critical", "warning")


def test_reload_adds_removes_keeps_and_rejects(lab: Lab, tmp_path: Path) -> None:
    config = write_config(lab, tmp_path / "reload.yaml", ["good", "expired"])
    d = DaemonProcess(config)
    try:
        m = d.wait_for(lambda m: len(m.find("ocsp_staple_state")) == 2)
        good = {"target": target(lab, "good")}
        first_probe = m.value("ocsp_staple_last_probe_timestamp_seconds", **good)

        # Valid: "expired" removed, "revoked" added, "good" unchanged. SIGHUP.
        write_config(lab, config, ["good", "revoked"])
        d.proc.send_signal(signal.SIGHUP)
        m = d.wait_for(lambda m: m.find("ocsp_staple_state", reason="revoked") == [1])
        assert m.find("ocsp_staple_state", target=target(lab, "expired")) == []
        assert m.find("ocsp_staple_probes_total", target=target(lab, "expired")) == []
        # Unchanged: same result, same schedule (not probed again by the reload).
        assert m.value("ocsp_staple_last_probe_timestamp_seconds", **good) == first_probe
        assert m.value("ocsp_staple_probes_total", **good) == 1
        assert m.value("ocsp_staple_targets_configured") == 2
        assert m.value("ocsp_staple_config_last_reload_successful") == 1

        # Invalid: rejected over HTTP, the running config stays.
        config.write_text(config.read_text() + "  - host: x.test\n    port: nope\n")
        response = requests_post(d.url + "/-/reload")
        assert response.status_code == 500
        assert 'targets[2].port: expected an integer 1-65535, got "nope"' in response.text
        m = d.scrape()
        assert m.value("ocsp_staple_config_last_reload_successful") == 0
        assert m.value("ocsp_staple_targets_configured") == 2
        assert m.find("ocsp_staple_state", reason="revoked") == [1]
        errors = [e for e in d.logs() if e["level"] == "error"]
        assert "reload rejected" in str(errors[-1]["msg"])

        # Fixed again: the metric recovers.
        write_config(lab, config, ["good"])
        assert requests_post(d.url + "/-/reload").status_code == 200
        m = d.scrape()
        assert m.value("ocsp_staple_config_last_reload_successful") == 1
        assert m.find("ocsp_staple_state", reason="revoked") == []
    finally:
        t0 = time.monotonic()
        code = d.stop()
        # SIGTERM: a clean exit, well within the probe timeout.
        assert code == 0
        assert time.monotonic() - t0 < 5
        assert any(e["msg"] == "shutting down" for e in d.logs())


def requests_post(url: str) -> requests.Response:
    return requests.post(url, timeout=30)


def test_probe_honours_the_scrape_timeout(tmp_path: Path) -> None:
    with peer(silent) as port:
        config = tmp_path / "silent.yaml"
        config.write_text(
            "defaults: {interval: 1h, timeout: 20s}\n"
            f"targets:\n  - host: 127.0.0.1\n    port: {port}\n"
        )
        d = DaemonProcess(config)
        try:
            t0 = time.monotonic()
            response = d.get(
                "/probe",
                params={"target": f"127.0.0.1:{port}"},
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"},
            )
            elapsed = time.monotonic() - t0
            assert response.status_code == 200
            assert Metrics(response.text).find("ocsp_staple_state", reason="timeout") == [1]
            assert elapsed < 5  # the 20s probe timeout was cut to fit the scrape
            bad = d.get(
                "/probe",
                params={"target": f"127.0.0.1:{port}"},
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "abc"},
            )
            assert bad.status_code == 400
            assert "X-Prometheus-Scrape-Timeout-Seconds" in bad.text
        finally:
            d.stop()


def test_invalid_config_at_start_exits_2_listing_problems(tmp_path: Path) -> None:
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - host: ''\n    port: 0\n")
    script = Path(sys.executable).with_name("staple-monitor")
    proc = subprocess.run(
        [str(script), "run", "--config.file", str(bad), "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "staple-monitor: invalid configuration (2 problem(s)):",
        f'  {bad}: targets[0].host: expected a host name or IP address, got ""',
        f"  {bad}: targets[0].port: expected an integer 1-65535, got 0",
    ]
    check = subprocess.run(
        [str(script), "run", "--config.file", str(bad), "--config.check"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 2
