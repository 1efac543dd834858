"""``--web.config.file``: TLS and basic auth for the HTTP endpoint, in the Prometheus
exporter-toolkit format, so one file works for staple-monitor and the other exporters.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: clients-ca.crt                 # for the Verify* types
      min_version: TLS12                             # TLS12 (default) or TLS13
    basic_auth_users:
      alice: $2y$10$...                              # bcrypt hashes

Checked strictly like the main configuration; relative paths are relative to the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from monitor.config import ConfigError

# exporter-toolkit's client_auth_type values we can honour with Python's ssl module.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Accepting a client certificate without verifying it is not something Python's ssl
# module can do; refusing the file is better than silently verifying or ignoring.
UNSUPPORTED_AUTH = ("RequestClientCert", "RequireAnyClientCert")
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class WebConfig:
    """A checked web configuration."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _verified: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def authorised(self, header: str | None) -> bool:
        """Whether an Authorization header passes; always True without basic_auth_users."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        # bcrypt is slow on purpose; remember outcomes (keyed by a digest, never the
        # password) so a scrape every few seconds does not pay it each time.
        key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self._lock:
            known = self._verified.get(key)
        if known is None:
            known = bcrypt.checkpw(password.encode(), hashed)
            with self._lock:
                if len(self._verified) > 1024:
                    self._verified.clear()
                self._verified[key] = known
        return known


def load_web_config(path: str) -> WebConfig:
    """Load and check ``path``; raise ConfigError listing every problem."""
    shown = str(path)
    problems: list[str] = []

    def bad(where: str, message: str) -> None:
        problems.append(f"{shown}: {where}: {message}")

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {exc.strerror or exc}"]) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{shown}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{shown}: expected a mapping"])
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users"):
            bad(
                str(key),
                "unknown or unsupported key (supported: basic_auth_users, tls_server_config)",
            )
    base = Path(path).parent
    tls = None
    if raw.get("tls_server_config") is not None:
        tls = _tls(raw["tls_server_config"], base, bad)
    users: dict[str, bytes] = {}
    raw_users = raw.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        bad("basic_auth_users", "expected a mapping of user names to bcrypt hashes")
        raw_users = {}
    for user, hashed in raw_users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            bad(f"basic_auth_users.{user}", "expected a bcrypt hash ($2y$...)")
        else:
            users[str(user)] = hashed.encode()
    if problems:
        raise ConfigError(problems)
    return WebConfig(tls=tls, users=users)


def _tls(raw: Any, base: Path, bad: Any) -> ssl.SSLContext | None:
    allowed = {
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
    }
    if not isinstance(raw, dict):
        bad("tls_server_config", "expected a mapping")
        return None
    for key in raw:
        if key not in allowed:
            bad(
                f"tls_server_config.{key}",
                f"unknown or unsupported key (supported: {', '.join(sorted(allowed))})",
            )
    paths = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = raw.get(key)
        if value is not None:
            paths[key] = str(base / value) if not Path(value).is_absolute() else value
    for key in ("cert_file", "key_file"):
        if key not in paths:
            bad(f"tls_server_config.{key}", "required when tls_server_config is given")
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth in UNSUPPORTED_AUTH:
        bad(
            "tls_server_config.client_auth_type",
            f"{auth} (accepting unverified client certificates) is not supported; use"
            " VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
        )
    elif auth not in CLIENT_AUTH:
        bad(
            "tls_server_config.client_auth_type",
            f"expected one of {', '.join(CLIENT_AUTH)}, got {auth!r}",
        )
    elif auth != "NoClientCert" and "client_ca_file" not in paths:
        bad("tls_server_config.client_ca_file", f"required with client_auth_type {auth}")
    versions = {}
    for key in ("min_version", "max_version"):
        if key in raw:
            if raw[key] not in VERSIONS:
                bad(f"tls_server_config.{key}", f"expected TLS12 or TLS13, got {raw[key]!r}")
            else:
                versions[key] = VERSIONS[raw[key]]
    if "cert_file" not in paths or "key_file" not in paths or auth not in CLIENT_AUTH:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    if "max_version" in versions:
        ctx.maximum_version = versions["max_version"]
    try:
        ctx.load_cert_chain(paths["cert_file"], paths["key_file"])
    except (OSError, ssl.SSLError) as exc:
        bad(
            "tls_server_config.cert_file",
            f"cannot load {paths['cert_file']} with {paths['key_file']}: {exc}",
        )
        return None
    ctx.verify_mode = CLIENT_AUTH[auth]
    if "client_ca_file" in paths:
        try:
            ctx.load_verify_locations(paths["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            bad("tls_server_config.client_ca_file", f"cannot load {paths['client_ca_file']}: {exc}")
            return None
    return ctx
