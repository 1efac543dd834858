"""/probe at its edges: malformed targets, the allow-list, and its own concurrency limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.lab import DaemonProcess, Metrics, free_port
from tests.peers import peer, silent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    with peer(silent) as port:
        yield port


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, silent_port: int) -> Iterator[DaemonProcess]:
    config = tmp_path_factory.mktemp("probe") / "probe.yaml"
    config.write_text(
        "defaults: {interval: 1h, timeout: 10s}\n"
        'probe_allow: ["127.0.0.2:*", "[::1]:443"]\n'
        f"targets:\n  - {{host: 127.0.0.1, port: {silent_port}}}\n"
    )
    d = DaemonProcess(config, "--web.probe-concurrency", "1")
    yield d
    d.stop()


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("target=example.com", "expected HOST:PORT with an explicit port"),
        ("target=example.com:99999", "port must be an integer 1-65535, got '99999'"),
        ("target=example.com:", "port must be an integer 1-65535, got ''"),
        ("target=" + "a" * 300 + ":443", "host name is longer than 253 characters (300)"),
        ("target=2001:db8::1:443", "IPv6 address must be in brackets"),
        ("target=exa%00mple.com:443", "contains spaces or control characters"),
        ("target=example.com%0a:443", "contains spaces or control characters"),
        ("target=exa%20mple.com:443", "contains spaces or control characters"),
        ("target=127.0.0.2:443&server_name=bad%0aname", "server_name: "),
        ("target=127.0.0.2:443&target=127.0.0.2:444", "each parameter may be given once"),
        ("target=127.0.0.2:443&job=evil", "unknown parameter(s): job"),
        ("target=127.0.0.2:443&address=10.0.0.1", "unknown parameter(s): address"),
        ("target=" + "x" * 3000, "query string too long"),
        ("", "target parameter is missing"),
        ("%%%", "malformed query string"),
    ],
)
def test_malformed_requests_are_400_with_a_message(
    daemon: DaemonProcess, query: str, words: str
) -> None:
    response = requests.get(f"{daemon.url}/probe?{query}", timeout=30)
    assert response.status_code == 400, response.text
    assert words in response.text


def test_unconfigured_target_is_refused(daemon: DaemonProcess) -> None:
    response = daemon.get("/probe", params={"target": "127.0.0.3:443"})
    assert response.status_code == 403
    assert "neither configured nor matched by probe_allow" in response.text


def test_pattern_allows_an_unconfigured_target(daemon: DaemonProcess) -> None:
    port = free_port("127.0.0.2")  # nobody listens there
    response = daemon.get("/probe", params={"target": f"127.0.0.2:{port}"})
    assert response.status_code == 200
    m = Metrics(response.text)
    assert m.find("ocsp_staple_state", target=f"127.0.0.2:{port}", reason="connect_error") == [1]
    assert daemon.get("/probe", params={"target": "[::1]:443"}).status_code == 200


def test_probes_have_their_own_concurrency_limit(daemon: DaemonProcess, silent_port: int) -> None:
    results: list[int] = []

    def slow() -> None:
        r = daemon.get(
            "/probe",
            params={"target": f"127.0.0.1:{silent_port}"},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"},
        )
        results.append(r.status_code)

    first = threading.Thread(target=slow)
    first.start()
    # While the first hangs on the silent peer, a second one is turned away at once.
    deadline = 50
    while deadline and daemon.scrape().value("ocsp_staple_probes_in_flight") == 0:
        threading.Event().wait(0.05)
        deadline -= 1
    second = daemon.get("/probe", params={"target": f"127.0.0.1:{silent_port}"})
    first.join()
    assert second.status_code == 503
    assert "too many /probe requests at once (limit 1)" in second.text
    assert results == [200]


def test_any_target_is_an_explicit_option(tmp_path: Path) -> None:
    config = tmp_path / "any.yaml"
    config.write_text("targets: []\n")
    d = DaemonProcess(config, "--web.probe-any-target")
    try:
        port = free_port("127.0.0.3")
        response = d.get("/probe", params={"target": f"127.0.0.3:{port}"})
        assert response.status_code == 200
        assert "connect_error" in response.text
    finally:
        d.stop()
