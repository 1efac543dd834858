"""The test lab: a throwaway PKI, a real `openssl ocsp` responder and real nginx on 127.0.0.0/8.

Only loopback addresses are ever used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.x509 import ocsp

from monitor.lab import pki
from monitor.responder import request_der

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def need_binary(name: str) -> str:
    """Path of ``name``; a failure under CI=true, a skip elsewhere (never a silent pass)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    message = f"{name} is not installed (the README's test command installs it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI=true, so integration tests must not be skipped")
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within 10s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PKI:
    """Root, intermediate, responders and leaves, written to ``dir``."""

    dir: Path
    now: datetime
    ocsp_url: str
    root: pki.Issued = field(init=False)
    inter: pki.Issued = field(init=False)
    responder: pki.Issued = field(init=False)
    responder_no_eku: pki.Issued = field(init=False)
    rogue: pki.Issued = field(init=False)
    other_root: pki.Issued = field(init=False)
    leaves: dict[str, pki.Issued] = field(init=False, default_factory=dict)
    extra_staples: dict[str, bytes] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        now = self.now
        self.root = pki.make_root("staple-monitor test root", now)
        self.inter = pki.make_intermediate("staple-monitor test CA", self.root, now)
        self.responder = pki.make_responder("test OCSP responder", self.inter, now)
        self.responder_no_eku = pki.make_responder(
            "test responder without EKU", self.inter, now, ocsp_signing=False
        )
        # Same subject as the real CA, different key: a forged signer.
        self.rogue = pki.make_root("staple-monitor test CA", now)
        self.other_root = pki.make_root("some other root", now)
        names = ["lab.test", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
        self.leaves = {
            "live": pki.make_leaf(names, self.inter, now, ocsp_url=self.ocsp_url),
            "fixed": pki.make_leaf(names, self.inter, now, ocsp_url=self.ocsp_url),
            "other": pki.make_leaf(names, self.inter, now, ocsp_url=self.ocsp_url),
            "must": pki.make_leaf(names, self.inter, now, ocsp_url=self.ocsp_url, must_staple=True),
            "noocsp": pki.make_leaf(names, self.inter, now, ocsp_url=None),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        pki.write(self.path("root.pem"), self.root.cert_pem())
        pki.write(self.path("other-root.pem"), self.other_root.cert_pem())
        pki.write(self.path("ca-chain.pem"), self.inter.cert_pem(), self.root.cert_pem())
        pki.write(self.path("inter.pem"), self.inter.cert_pem())
        pki.write(self.path("responder.pem"), self.responder.cert_pem())
        pki.write(self.path("responder.key"), self.responder.key_pem())
        for name, leaf in self.leaves.items():
            pki.write(self.path(f"{name}.pem"), leaf.cert_pem(), self.inter.cert_pem())
            pki.write(self.path(f"{name}-only.pem"), leaf.cert_pem())
            pki.write(self.path(f"{name}.key"), leaf.key_pem())

    def path(self, name: str) -> Path:
        return self.dir / name

    def add_leaf(self, name: str, ocsp_url: str | None) -> pki.Issued:
        """One more leaf (same names, same CA) whose certificate names ``ocsp_url``, with
        its files written and a good staple for it under the same name."""
        leaf = pki.make_leaf(
            ["lab.test", "127.0.0.1", "127.0.0.2", "127.0.0.3"], self.inter, self.now,
            ocsp_url=ocsp_url,
        )  # fmt: skip
        self.leaves[name] = leaf
        pki.write(self.path(f"{name}.pem"), leaf.cert_pem(), self.inter.cert_pem())
        pki.write(self.path(f"{name}-only.pem"), leaf.cert_pem())
        pki.write(self.path(f"{name}.key"), leaf.key_pem())
        self.extra_staples[name] = self.response(name)
        return leaf

    def response(self, leaf: str = "fixed", **kw: object) -> bytes:
        """A staple about ``leaves[leaf]``; keywords as pki.make_response (signer: the CA)."""
        args: dict[str, object] = {
            "signer": self.inter,
            "this_update": self.now - HOUR,
            "next_update": self.now + 7 * DAY,
        }
        args.update(kw)
        return pki.make_response(self.leaves[leaf].cert, self.inter.cert, **args)  # type: ignore[arg-type]

    def staples(self) -> dict[str, bytes]:
        """The crafted staples served through ssl_stapling_file, by scenario name."""
        now = self.now
        return {
            "good": self.response(),
            "revoked": self.response(
                status=ocsp.OCSPCertStatus.REVOKED,
                revocation_time=now - DAY,
                revocation_reason=x509.ReasonFlags.key_compromise,
            ),
            "unknown": self.response(status=ocsp.OCSPCertStatus.UNKNOWN),
            "expired": self.response(this_update=now - 8 * DAY, next_update=now - DAY),
            "notyet": self.response(this_update=now + 2 * HOUR, next_update=now + 8 * DAY),
            "expiring": self.response(this_update=now - 6 * DAY, next_update=now + 2 * HOUR),
            "badsig": self.response(signer=self.rogue),
            "delegated": self.response(signer=self.responder, include_signer=True),
            "delegated_noeku": self.response(signer=self.responder_no_eku, include_signer=True),
            "wrongid": self.response(leaf="other"),
            "trylater": pki.unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER),
            **self.extra_staples,
        }


class Responder:
    """A real `openssl ocsp` responder for the intermediate CA, on 127.0.0.1."""

    NUDGE = "nudge-after-index-change"

    def __init__(self, lab: PKI, port: int, revoked: frozenset[str] = frozenset()) -> None:
        self.lab = lab
        self.port = port
        self.always_revoked = revoked  # leaves revoked in every index this responder writes
        self.index = lab.path("index.txt")
        self.proc: subprocess.Popen[bytes] | None = None

    def write_index(self, revoked: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        lines = []
        revoked = set(revoked) | self.always_revoked
        for name, leaf in self.lab.leaves.items():
            serial = format(leaf.cert.serial_number, "X")
            if len(serial) % 2:
                serial = "0" + serial
            expiry = leaf.cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
            subject = "/" + "/".join(a.rfc4514_string() for a in leaf.cert.subject)
            if name in revoked:
                when = (self.lab.now - HOUR).strftime("%y%m%d%H%M%SZ")
                lines.append(f"R\t{expiry}\t{when}\t{serial}\tunknown\t{subject}")
            else:
                lines.append(f"V\t{expiry}\t\t{serial}\tunknown\t{subject}")
        # Several lab leaves share a subject: tell openssl's index that is fine.
        self.index.with_name("index.txt.attr").write_text("unique_subject = no\n")
        before = self.index.stat() if self.index.exists() else None
        self.index.write_text("\n".join(lines) + "\n")
        if self.proc is None or self.proc.poll() is not None:
            return
        # A running `openssl ocsp` reloads a changed index, but it compares the file's
        # times in whole seconds, and only when it goes back to wait for a request after
        # answering one. So: make the change visible in whole seconds, then send a
        # throwaway request, after which the next real one is answered from the new index.
        if before is not None and int(self.index.stat().st_mtime) <= int(before.st_mtime):
            later = int(before.st_mtime) + 1
            os.utime(self.index, (later, later))
        # (A valid request: `openssl ocsp` 3.0 exits after a malformed one.)
        nudge = request_der(self.lab.leaves["live"].cert, self.lab.inter.cert)
        with contextlib.suppress(requests.RequestException):
            requests.post(
                f"http://127.0.0.1:{self.port}/{self.NUDGE}", data=nudge, timeout=5,
                headers={"Content-Type": "application/ocsp-request"},
            )  # fmt: skip

    def start(self) -> None:
        openssl = need_binary("openssl")
        self.write_index()
        self.log = self.lab.path("responder.log").open("wb")
        self.proc = subprocess.Popen(
            [
                openssl, "ocsp",
                "-index", str(self.index),
                # openssl 3.0 takes only a port number here and listens on every
                # local address; the tests only ever connect to it on 127.0.0.1.
                "-port", str(self.port),
                "-rsigner", str(self.lab.path("responder.pem")),
                "-rkey", str(self.lab.path("responder.key")),
                "-CA", str(self.lab.path("inter.pem")),
                "-ndays", "7",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Not wait_listening: a bare connect-and-close wedges `openssl ocsp` (it
        # waits forever on that connection), so wait for its own "ready" line.
        log = self.lab.path("responder.log")
        deadline = time.monotonic() + 10
        while b"waiting for OCSP client connections" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"openssl ocsp did not start: {log.read_text()}")
            time.sleep(0.05)

    def requests_seen(self) -> list[str]:
        """The first line of every request it received ("GET /MFUw... HTTP/1.1"), in order."""
        text = self.lab.path("responder.log").read_text(errors="replace")
        marker = "Received request, 1st line: "
        return [
            line.split(marker, 1)[1]
            for line in text.splitlines()
            if marker in line and self.NUDGE not in line
        ]

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.log.close()


@dataclass(frozen=True)
class Server:
    """One nginx server block."""

    name: str
    leaf: str  # key into PKI.leaves
    address: str = "127.0.0.1"
    port: int = 0
    stapling: bool = True
    staple_file: str | None = None  # key into PKI.staples()
    protocols: str = "TLSv1.2 TLSv1.3"
    send_chain: bool = True


class Nginx:
    """Real nginx with one server block per scenario, run in the foreground."""

    def __init__(self, lab: PKI, servers: list[Server]) -> None:
        self.lab = lab
        self.servers = servers
        self.dir = lab.path("nginx")
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        d = self.dir
        staples = self.lab.staples()
        blocks = []
        for s in self.servers:
            cert = self.lab.path(f"{s.leaf}.pem" if s.send_chain else f"{s.leaf}-only.pem")
            lines = [
                f"listen {s.address}:{s.port} ssl;",
                "server_name lab.test;",
                f"ssl_certificate {cert};",
                f"ssl_certificate_key {self.lab.path(s.leaf + '.key')};",
                f"ssl_protocols {s.protocols};",
            ]
            if s.stapling:
                lines += [
                    "ssl_stapling on;",
                    "ssl_stapling_verify on;",
                    f"ssl_trusted_certificate {self.lab.path('ca-chain.pem')};",
                ]
            if s.staple_file:
                path = pki.write(d / f"{s.staple_file}.der", staples[s.staple_file])
                lines.append(f"ssl_stapling_file {path};")
            lines.append('location / { return 200 "ok\\n"; }')
            blocks.append("  server {\n" + "".join(f"    {x}\n" for x in lines) + "  }\n")
        temp = "".join(
            f"  {k}_temp_path {d}/tmp-{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes 1;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n  access_log off;\n{temp}" + "".join(blocks) + "}\n"
        )

    def start(self) -> None:
        nginx = need_binary("nginx")
        self.dir.mkdir(exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "stderr.log").open("wb"),
        )
        for s in self.servers:
            try:
                wait_listening(s.address, s.port, self.proc, "nginx")
            except RuntimeError as exc:
                err = (self.dir / "stderr.log").read_text() + (self.dir / "error.log").read_text()
                raise RuntimeError(f"{exc}\n{err}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGQUIT)

    def error_log(self) -> str:
        return (self.dir / "error.log").read_text()


def openssl_response(lab: PKI, index: Path, leaves: list[str], signer: str = "inter") -> bytes:
    """Ask `openssl ocsp` (request and responder sides) about several leaves at once.

    ``index`` is an openssl CA index (see Responder.write_index); ``signer`` is
    "inter" (the CA signs) or "responder" (the delegated responder signs).
    """
    openssl = need_binary("openssl")
    work = index.parent
    request, response = work / "multi-req.der", work / "multi-resp.der"
    cert_args = [a for name in leaves for a in ("-cert", str(lab.path(f"{name}-only.pem")))]
    subprocess.run(
        [openssl, "ocsp", "-issuer", str(lab.path("inter.pem")), *cert_args,
         "-no_nonce", "-reqout", str(request)],
        check=True, capture_output=True,
    )  # fmt: skip
    if signer == "inter":
        pki.write(work / "inter.key", lab.inter.key_pem())
        rsigner, rkey = lab.path("inter.pem"), work / "inter.key"
    else:
        rsigner, rkey = lab.path("responder.pem"), lab.path("responder.key")
    subprocess.run(
        [openssl, "ocsp", "-index", str(index), "-CA", str(lab.path("inter.pem")),
         "-rsigner", str(rsigner), "-rkey", str(rkey), "-ndays", "7",
         "-reqin", str(request), "-respout", str(response)],
        check=True, capture_output=True,
    )  # fmt: skip
    return response.read_bytes()


class DaemonProcess:
    """`staple-monitor run` as a real process on 127.0.0.1, scraped over HTTP."""

    def __init__(self, config: Path, *extra: str) -> None:
        import sys

        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config.with_suffix(".log")
        script = Path(sys.executable).with_name("staple-monitor")
        self.proc = subprocess.Popen(
            [str(script), "run", "--config.file", str(config),
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.format", "json", *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
        )  # fmt: skip
        wait_listening("127.0.0.1", self.port, self.proc, "staple-monitor")
        # (a bare connect is harmless here: the daemon handles each connection in a thread)

    def get(self, path: str, **kw: object) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def scrape(self) -> Metrics:
        response = self.get("/metrics")
        response.raise_for_status()
        return Metrics(response.text)

    def wait_for(self, predicate: Callable[[Metrics], bool], timeout: float = 20) -> Metrics:
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            if predicate(metrics):
                return metrics
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s:\n{metrics.text}")
            time.sleep(0.2)

    def logs(self) -> list[dict[str, object]]:
        import json

        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def stop(self) -> int:
        stop(self.proc)
        return int(self.proc.returncode)


class Metrics:
    """Parsed exposition text: ``value(name, **labels)`` for the one matching sample."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def find(self, name: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} samples"
        return found[0] if found else None


class PrometheusServer:
    """A real Prometheus (Debian's package) on 127.0.0.1 with a config written by the test."""

    def __init__(self, directory: Path, config: str) -> None:
        binary = need_binary("prometheus")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prometheus.yml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL,
            stderr=(directory / "prometheus.log").open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (directory / "prometheus.log").read_text()
                raise RuntimeError(f"prometheus did not become ready:\n{log}")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> object:
        response = requests.get(self.url + "/api/v1/" + path, params=params, timeout=30)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> set[tuple[str, str, str]]:
        """(alertname, target or instance, address) of every firing alert."""
        alerts = self.api("alerts")["alerts"]  # type: ignore[index]
        return {
            (a["labels"]["alertname"], a["labels"].get("target", a["labels"].get("instance", "")),
             a["labels"].get("address", ""))
            for a in alerts
            if a["state"] == "firing"
        }  # fmt: skip

    def stop(self) -> None:
        stop(self.proc)
