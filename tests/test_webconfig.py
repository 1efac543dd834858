"""--web.config.file with real HTTPS clients: TLS, client certificates, basic auth."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from monitor.config import ConfigError
from monitor.lab import pki
from monitor.webconfig import load_web_config
from tests.lab import DaemonProcess

pytestmark = pytest.mark.integration


class Certs:
    def __init__(self, d: Path) -> None:
        now = pki.utcnow()
        root = pki.make_root("web root", now)
        ca = pki.make_intermediate("web CA", root, now)
        server = pki.make_leaf(["127.0.0.1", "localhost"], ca, now, ocsp_url=None)
        client_root = pki.make_root("client root", now)
        client = pki.make_leaf(["scraper"], client_root, now, ocsp_url=None, client=True)
        stranger_root = pki.make_root("stranger root", now)
        stranger = pki.make_leaf(["stranger"], stranger_root, now, ocsp_url=None, client=True)
        self.root = pki.write(d / "root.pem", root.cert_pem())
        self.server_cert = pki.write(d / "server.pem", server.cert_pem(), ca.cert_pem())
        self.server_key = pki.write(d / "server.key", server.key_pem())
        self.client_ca = pki.write(d / "client-ca.pem", client_root.cert_pem())
        self.client = (
            str(pki.write(d / "client.pem", client.cert_pem())),
            str(pki.write(d / "client.key", client.key_pem())),
        )
        self.stranger = (
            str(pki.write(d / "stranger.pem", stranger.cert_pem())),
            str(pki.write(d / "stranger.key", stranger.key_pem())),
        )


TLS_AB = "tls_server_config:\n  cert_file: a.pem\n  key_file: b.key\n"
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def start(tmp: Path, web_yaml: str) -> DaemonProcess:
    (tmp / "web.yml").write_text(web_yaml)
    config = tmp / "config.yaml"
    config.write_text("targets: []\n")
    return DaemonProcess(config, "--web.config.file", str(tmp / "web.yml"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def tls_auth(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("tls-auth")
    d = start(
        tmp,
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n",
    )
    yield d
    d.stop()


def test_right_password_over_https(certs: Certs, tls_auth: DaemonProcess) -> None:
    url = f"https://127.0.0.1:{tls_auth.port}/metrics"
    response = requests.get(url, auth=("prometheus", "s3cret"), verify=str(certs.root), timeout=30)
    assert response.status_code == 200
    assert "ocsp_staple_build_info" in response.text


@pytest.mark.parametrize(
    "auth", [None, ("prometheus", "wrong"), ("nobody", "s3cret")], ids=["none", "wrong", "user"]
)
def test_wrong_or_no_password_is_401(
    certs: Certs, tls_auth: DaemonProcess, auth: tuple[str, str] | None
) -> None:
    for path in ("/metrics", "/probe?target=127.0.0.1:443", "/", "/healthz"):
        response = requests.get(
            f"https://127.0.0.1:{tls_auth.port}{path}",
            auth=auth,
            verify=str(certs.root),
            timeout=30,
        )
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Basic realm="staple-monitor"'


def test_plain_http_to_the_tls_port_gets_nothing(tls_auth: DaemonProcess) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{tls_auth.port}/metrics", timeout=10)


def test_untrusted_server_certificate_is_refused_by_clients(tls_auth: DaemonProcess) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{tls_auth.port}/metrics", timeout=10)


def test_client_certificate_required(certs: Certs, tmp_path: Path) -> None:
    d = start(
        tmp_path,
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.client_ca}\n",
    )
    url = f"https://127.0.0.1:{d.port}/metrics"
    try:
        ok = requests.get(url, cert=certs.client, verify=str(certs.root), timeout=30)
        assert ok.status_code == 200
        for cert in (None, certs.stranger):
            with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
                requests.get(url, cert=cert, verify=str(certs.root), timeout=10)
        # A stalled handshake does not block other clients (handshakes run per thread).
        import socket

        with socket.create_connection(("127.0.0.1", d.port)):
            again = requests.get(url, cert=certs.client, verify=str(certs.root), timeout=30)
            assert again.status_code == 200
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: a.pem\n", "tls_server_config.key_file: required"),
        (
            TLS_AB + "  client_auth_type: RequireAnyClientCert\n",
            "RequireAnyClientCert (accepting unverified client certificates) is not supported",
        ),
        (
            TLS_AB + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: required with client_auth_type"
            " RequireAndVerifyClientCert",
        ),
        ("basic_auth_users:\n  bob: plaintext\n", "basic_auth_users.bob: expected a bcrypt hash"),
        ("http_server_config: {http2: true}\n", "http_server_config: unknown or unsupported key"),
        ("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n", "cannot load"),
    ],
)
def test_bad_web_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_web_config(str(path))
    assert any(message in p for p in exc.value.problems), exc.value.problems
    assert all(p.startswith(f"{path}: ") for p in exc.value.problems)


def test_bad_web_config_stops_the_daemon_at_start(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  bob: plaintext\n")
    (tmp_path / "config.yaml").write_text("targets: []\n")
    script = Path(sys.executable).with_name("staple-monitor")
    proc = subprocess.run(
        [str(script), "run", "--config.file", str(tmp_path / "config.yaml"),
         "--web.config.file", str(tmp_path / "web.yml"), "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "basic_auth_users.bob: expected a bcrypt hash" in proc.stderr
