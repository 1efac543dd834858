"""The cross-check with the CA's responder, against a real `openssl ocsp` and real nginx.

This module runs its own PKI, responder and nginx (the session lab's index is never
touched): nginx staples fixed "good" responses from files, as a server does with its
cached staple, so every request the responder logs comes from staple-monitor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.lab import pki
from tests.lab import PKI, DaemonProcess, Metrics, Nginx, Responder, Server, free_port
from tests.peers import peer, silent

pytestmark = pytest.mark.integration


class _Garbage(BaseHTTPRequestHandler):
    """An HTTP server that answers every OCSP request with 200 and junk bytes."""

    def do_GET(self) -> None:
        body = b"\x30\x03\x0a\x01\x00 not an OCSP response"
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class World:
    pki: PKI
    responder: Responder
    ports: dict[str, int]

    def run_check(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The real console script against one of this module's nginx servers."""
        script = Path(sys.executable).with_name("staple-monitor")
        return subprocess.run(
            [str(script), "check", f"lab.test:{self.ports[name]}", "--address", "127.0.0.1",
             "--ca-file", str(self.pki.path("root.pem")), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def check(self, name: str, *args: str) -> tuple[int, dict[str, Any]]:
        proc = self.run_check(name, "--json", *args)
        assert proc.stderr == "", proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def check_text(self, name: str, *args: str) -> str:
        return self.run_check(name, *args).stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("responder")
    port = free_port()
    lab = PKI(root, pki.utcnow(), f"http://127.0.0.1:{port}/")
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    with peer(silent) as silent_port:
        lab.add_leaf("down", f"http://127.0.0.1:{free_port()}/")
        lab.add_leaf("garbage", f"http://127.0.0.1:{garbage.server_address[1]}/")
        lab.add_leaf("slow", f"http://127.0.0.1:{silent_port}/")
        responder = Responder(lab, port)
        responder.start()
        ports: dict[str, int] = {}
        servers = []
        # "fixed" three times (one certificate behind three targets), then one each.
        for name, leaf, staple in [
            ("shared1", "fixed", "good"),
            ("shared2", "fixed", "good"),
            ("shared3", "fixed", "good"),
            ("live", "live", None),
            ("down", "down", "down"),
            ("garbage", "garbage", "garbage"),
            ("slow", "slow", "slow"),
        ]:
            ports[name] = free_port()
            servers.append(Server(name, leaf, port=ports[name], staple_file=staple))
        nginx = Nginx(lab, servers)
        nginx.start()
        try:
            yield World(lab, responder, ports)
        finally:
            nginx.stop()
            responder.stop()
            garbage.shutdown()


def _responder_good(m: Metrics, target: str) -> bool:
    return m.value("ocsp_responder_cert_status", target=target, status="good") == 1


def test_revoked_at_the_responder_while_nginx_staples_good(world: World, tmp_path: Path) -> None:
    # Refresh at once (fraction 0) so the revocation is seen quickly, but never ask the
    # responder more than once every 2 seconds.
    target = f"lab.test:{world.ports['shared1']}"
    config = tmp_path / "daemon.yaml"
    config.write_text(
        "defaults: {interval: 500ms, timeout: 5s, retry_no_staple: 0,"
        f" ca_file: {world.pki.path('root.pem')}}}\n"
        "responder: {refresh_fraction: 0, retry_after_error: 1s, min_interval: 2s, method: post}\n"
        f"targets:\n  - {{host: lab.test, port: {world.ports['shared1']},"
        " addresses: [127.0.0.1]}\n"
    )
    before = len(world.responder.requests_seen())
    started = time.monotonic()
    daemon = DaemonProcess(config)
    try:
        m = daemon.wait_for(lambda m: _responder_good(m, target))
        assert m.value("ocsp_staple_state", target=target, state="ok", reason="ok") == 1
        assert m.value("ocsp_responder_up", target=target) == 1
        world.responder.write_index(revoked={"fixed"})
        m = daemon.wait_for(
            lambda m: m.value(
                "ocsp_staple_state", target=target, reason="revoked_at_responder"
            ) == 1,
            timeout=30,
        )  # fmt: skip
        # The staple nginx serves still says good; only the CA's answer says revoked.
        assert m.value("ocsp_staple_cert_status", target=target, status="good") == 1
        assert m.value("ocsp_responder_cert_status", target=target, status="revoked") == 1
        assert m.value("ocsp_staple_state", target=target, state="critical",
                       reason="revoked_at_responder") == 1  # fmt: skip
        assert m.value("ocsp_responder_revocation_timestamp_seconds", target=target)
        time.sleep(3)
    finally:
        daemon.stop()
        world.responder.write_index()
    elapsed = time.monotonic() - started
    seen = world.responder.requests_seen()[before:]
    # Every query was a POST (as configured), and never more than one per 2 seconds.
    assert seen, "the responder was never asked"
    assert all(line.startswith("POST ") for line in seen), seen
    assert len(seen) <= elapsed / 2 + 1, (len(seen), elapsed)
    assert len(seen) >= 2  # it did ask again, which is how it saw the revocation


def test_one_query_serves_every_target_and_address_with_that_certificate(
    world: World, tmp_path: Path
) -> None:
    # Three targets, two of them with two addresses, all serving one certificate, each
    # probed every 500ms: the answer is valid for 7 days, so one query serves them all.
    names = ("shared1", "shared2", "shared3")
    config = tmp_path / "daemon.yaml"
    lines = [
        "defaults: {interval: 500ms, timeout: 5s, retry_no_staple: 0,"
        f" ca_file: {world.pki.path('root.pem')}}}",
        "targets:",
    ]
    lines += [
        f"  - {{host: lab.test, port: {world.ports[n]}, addresses: [127.0.0.1, 127.0.0.2]}}"
        if n != "shared3"
        else f"  - {{host: lab.test, port: {world.ports[n]}, addresses: [127.0.0.1]}}"
        for n in names
    ]
    # The same certificate once more, with the cross-check switched off for this target.
    off = f"127.0.0.1:{world.ports['shared1']}"
    lines.append(f"  - {{host: 127.0.0.1, port: {world.ports['shared1']}, responder_check: false}}")
    config.write_text("\n".join(lines) + "\n")
    before = len(world.responder.requests_seen())
    daemon = DaemonProcess(config)
    try:
        time.sleep(5)
        m = daemon.scrape()
    finally:
        daemon.stop()
    seen = world.responder.requests_seen()[before:]
    assert len(seen) == 1, seen
    assert seen[0].startswith("GET /")  # small enough for RFC 5019's GET
    for n in names:
        assert _responder_good(m, f"lab.test:{world.ports[n]}"), n
    # nginx listens on 127.0.0.1 only: the 127.0.0.2 addresses fail to connect and
    # need no answer; every 127.0.0.1 probe after the first came from the cache.
    assert sum(m.find("ocsp_responder_cache_hits_total")) >= 10
    assert sum(m.find("ocsp_responder_queries_total")) == 1
    assert m.value("ocsp_staple_state", target=off, state="ok", reason="ok") == 1
    assert m.find("ocsp_responder_up", target=off) == []
    assert m.find("ocsp_staple_responder_lag_seconds", target=off) == []


def _responder_doc(doc: dict[str, Any]) -> dict[str, Any]:
    result = doc["results"][0]
    assert result["responder"] is not None, result
    latest: dict[str, Any] = result["responder"]["latest"]
    return latest


def test_responder_down_leaves_a_good_staple_ok(world: World) -> None:
    code, doc = world.check("down")
    assert (code, doc["results"][0]["reason"]) == (0, "ok")
    latest = _responder_doc(doc)
    assert (latest["up"], latest["error"], latest["http_status"]) == (False, "connect_error", None)


def test_responder_answering_garbage_leaves_a_good_staple_ok(world: World) -> None:
    code, doc = world.check("garbage")
    assert (code, doc["results"][0]["reason"]) == (0, "ok")
    latest = _responder_doc(doc)
    assert (latest["up"], latest["error"], latest["http_status"]) == (False, "bad_answer", 200)
    assert latest["verdict"]["reason"] == "malformed_staple"
    assert "not a DER OCSPResponse" in latest["error_detail"]


def test_slow_responder_is_cut_off_at_its_timeout(world: World) -> None:
    t0 = time.monotonic()
    code, doc = world.check("slow", "--responder-timeout", "1s")
    took = time.monotonic() - t0
    assert (code, doc["results"][0]["reason"]) == (0, "ok")
    latest = _responder_doc(doc)
    assert (latest["up"], latest["error"]) == (False, "timeout")
    assert 0.9 < latest["latency_seconds"] < 3
    assert took < 10


def test_check_shows_the_responders_answer_beside_the_staples(world: World) -> None:
    code, doc = world.check("shared1")
    result = doc["results"][0]
    assert (code, result["reason"], result["cert_status"]) == (0, "ok", "good")
    latest = _responder_doc(doc)
    assert (latest["up"], latest["method"], latest["http_status"]) == (True, "get", 200)
    answer = latest["verdict"]
    assert (answer["reason"], answer["cert_status"], answer["signature_valid"]) == (
        "ok", "good", True,
    )  # fmt: skip
    # The staple (made an hour before the lab started) is older than openssl's fresh answer.
    assert result["staple_lag_seconds"] >= 3600
    text = world.check_text("shared1")
    assert f"responder     GET http://127.0.0.1:{world.responder.port}/, asked now" in text
    assert "  cert status good" in text


def test_staple_far_behind_the_responder_is_lagging(world: World) -> None:
    code, doc = world.check("shared1", "--staple-lag-warning", "30m")
    result = doc["results"][0]
    assert (code, result["state"], result["reason"]) == (1, "warning", "staple_lagging")
    assert "older than the responder's latest answer" in result["detail"]


def test_no_responder_flag_skips_the_cross_check(world: World) -> None:
    before = len(world.responder.requests_seen())
    code, doc = world.check("shared1", "--no-responder")
    assert (code, doc["results"][0]["responder"]) == (0, None)
    assert len(world.responder.requests_seen()) == before
