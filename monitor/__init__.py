"""staple-monitor: watches OCSP stapling on TLS servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("staple-monitor")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
