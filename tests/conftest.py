"""Shared fixtures: the nginx lab is started once per test session."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.lab import pki
from tests.lab import PKI, Nginx, Responder, Server, free_port

# Fixed staples served through ssl_stapling_file, one server block each.
STAPLE_SCENARIOS = [
    "good",
    "revoked",
    "unknown",
    "expired",
    "notyet",
    "expiring",
    "badsig",
    "delegated",
    "delegated_noeku",
    "wrongid",
    "trylater",
]


@dataclass
class Lab:
    pki: PKI
    responder: Responder
    nginx: Nginx
    ports: dict[str, int]
    multi_port: int

    def check(self, target: str, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """Run the real console script with --json; return (exit code, document)."""
        script = Path(sys.executable).with_name("staple-monitor")
        cmd = [str(script), "check", target, "--json", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.stderr == "", proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def check_scenario(self, name: str, *args: str) -> tuple[int, dict[str, Any]]:
        return self.check(
            f"lab.test:{self.ports[name]}",
            "--address",
            "127.0.0.1",
            "--ca-file",
            str(self.pki.path("root.pem")),
            *args,
        )


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    responder_port = free_port()
    the_pki = PKI(root, pki.utcnow(), f"http://127.0.0.1:{responder_port}/")
    # For the cross-check: a certificate the CA has revoked while nginx staples an old
    # "good" answer for it, and one whose responder is down.
    the_pki.add_leaf("revokedca", the_pki.ocsp_url)
    the_pki.add_leaf("deadresp", f"http://127.0.0.1:{free_port()}/")
    responder = Responder(the_pki, responder_port, revoked=frozenset({"revokedca"}))
    responder.start()
    ports: dict[str, int] = {}
    servers: list[Server] = []

    def add(name: str, **kw: Any) -> None:
        ports[name] = free_port()
        servers.append(Server(name=name, port=ports[name], **kw))

    add("live12", leaf="live", protocols="TLSv1.2")
    add("live13", leaf="live", protocols="TLSv1.3")
    add("off", leaf="live", stapling=False)
    add("must_off", leaf="must", stapling=False)
    add("noocsp", leaf="noocsp")
    add("leaf_only", leaf="fixed", stapling=False, send_chain=False)
    for scenario in STAPLE_SCENARIOS:
        add(scenario, leaf="fixed", staple_file=scenario)
    add("ca_revoked", leaf="revokedca", staple_file="revokedca")
    add("deadresp", leaf="deadresp", staple_file="deadresp")
    multi_port = free_port("127.0.0.2")
    servers.append(Server("multi_good", "fixed", "127.0.0.2", multi_port, staple_file="good"))
    servers.append(Server("multi_expired", "fixed", "127.0.0.3", multi_port, staple_file="expired"))
    nginx = Nginx(the_pki, servers)
    try:
        nginx.start()
        yield Lab(the_pki, responder, nginx, ports, multi_port)
    finally:
        nginx.stop()
        responder.stop()
