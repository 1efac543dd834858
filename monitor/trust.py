"""The trust store: the CA certificates a verdict checks the server's chain against.

Loaded once (at start-up or reload), never per probe.
"""

from __future__ import annotations

import ssl
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

from monitor.memo import Memo

# Where Debian, Fedora/RHEL and Alpine keep the system bundle, for Pythons whose
# OpenSSL was built with another default directory (pyenv, manylinux wheels).
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


class TrustError(Exception):
    """The trust store could not be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class Trust:
    """A set of trust anchors and where they came from."""

    anchors: tuple[x509.Certificate, ...]
    source: str
    store: Store = field(repr=False, compare=False)
    # What verdicts against these anchors have already worked out (see monitor.memo);
    # a reload makes a new Trust, so nothing outlives the anchors it was checked with.
    memo: Memo = field(default_factory=Memo, repr=False, compare=False)

    def anchors_named(self, name: x509.Name) -> list[x509.Certificate]:
        """Anchors whose subject is ``name``."""
        return [a for a in self.anchors if a.subject == name]


def _system_bundle() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *_SYSTEM_BUNDLES):
        if candidate and Path(candidate).is_file():
            return candidate
    raise TrustError(
        "no system CA bundle found (looked for "
        + ", ".join(_SYSTEM_BUNDLES)
        + "); install ca-certificates or pass a CA file"
    )


def load_trust(ca_file: str | None = None) -> Trust:
    """Load PEM trust anchors from ``ca_file``, or the system bundle when None."""
    path = ca_file or _system_bundle()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustError(f"{path}: cannot read CA file: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            # Some system bundles hold old roots with negative serials; cryptography
            # warns about each on every load, which tells an operator nothing.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustError(f"{path}: not a PEM file of certificates ({exc})") from None
    if not certs:
        raise TrustError(f"{path}: contains no certificates")
    return Trust(anchors=tuple(certs), source=path, store=Store(certs))
