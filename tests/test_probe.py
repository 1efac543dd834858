"""The probe's deadline and error paths against real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest

from monitor.probe import ProbeError, TLSVersion, context_for, probe
from monitor.runner import ResolveError, resolve
from tests.peers import drip, peer, silent


@pytest.mark.parametrize("behaviour", [silent, drip], ids=["silent", "drip"])
def test_a_peer_that_never_finishes_is_cut_at_the_deadline(behaviour) -> None:
    with peer(behaviour) as port:
        t0 = time.monotonic()
        capture = probe("127.0.0.1", port, "x.test", timeout=1.0)
        elapsed = time.monotonic() - t0
    assert capture.error is ProbeError.TIMEOUT
    assert "within 1s" in capture.error_detail
    # One deadline for the whole handshake: dripping bytes must not extend it.
    assert elapsed < 3.0


def test_closed_port_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        capture = probe("127.0.0.1", port, None, timeout=2.0)
    assert capture.error is ProbeError.CONNECT_ERROR
    assert "refused" in capture.error_detail.lower()


def test_peer_that_answers_garbage_is_a_tls_error() -> None:
    def garbage(conn, stop) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    with peer(garbage) as port:
        capture = probe("127.0.0.1", port, "x.test", timeout=2.0)
    assert capture.error is ProbeError.TLS_ERROR
    assert capture.error_detail.startswith("TLS handshake failed")


def test_contexts_are_shared_per_tls_profile() -> None:
    assert context_for(TLSVersion.TLS1_3) is context_for(TLSVersion.TLS1_3)
    assert context_for(TLSVersion.TLS1_2) is not context_for(TLSVersion.TLS1_3)


def test_resolve_ip_literals_without_dns() -> None:
    assert resolve("127.0.0.2", 443) == ("127.0.0.2",)
    assert resolve("::1", 443) == ("::1",)


def test_resolve_localhost_from_hosts_file() -> None:
    assert "127.0.0.1" in resolve("localhost", 443)


def test_unresolvable_name_fails_before_any_query() -> None:
    # An empty label cannot be encoded, so no DNS packet ever leaves the machine.
    with pytest.raises(ResolveError, match=r"cannot resolve bad\.\.name"):
        resolve("bad..name", 443)


def test_missing_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.lab import need_binary

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need_binary("no-such-binary-for-staple-monitor")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        need_binary("no-such-binary-for-staple-monitor")
