"""Files for an example nginx that staples, and a staple-monitor config that watches it.

Used by the docker compose stack (deploy/docker/compose.yaml) and its test::

    python -m monitor.lab.nginx_files DIR [--host NAME] [--port N]

DIR receives a throwaway root and chain, nginx.conf (stapling a fresh 'good' response
through ssl_stapling_file, valid for 7 days) and staple-monitor.yaml pointing at it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from monitor.lab import pki

NAME = "example.test"


def write_files(directory: Path, host: str, port: int, listen: str = "0.0.0.0") -> None:  # noqa: S104
    """Write everything into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = pki.utcnow()
    root = pki.make_root("staple-monitor example root", now)
    ca = pki.make_intermediate("staple-monitor example CA", root, now)
    leaf = pki.make_leaf([NAME, host], ca, now, ocsp_url="http://ocsp.example.test/")
    staple = pki.make_response(
        leaf.cert, ca.cert, ca, this_update=now, next_update=now + timedelta(days=7)
    )
    pki.write(directory / "root.pem", root.cert_pem())
    pki.write(directory / "chain.pem", leaf.cert_pem(), ca.cert_pem())
    pki.write(directory / "leaf.key", leaf.key_pem()).chmod(0o600)
    pki.write(directory / "staple.der", staple)
    (directory / "nginx.conf").write_text(
        f"""# Example target for staple-monitor: staples a fixed response (ssl_stapling_file).
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body-spool;
  proxy_temp_path {directory}/proxy-spool;
  fastcgi_temp_path {directory}/fastcgi-spool;
  uwsgi_temp_path {directory}/uwsgi-spool;
  scgi_temp_path {directory}/scgi-spool;
  server {{
    listen {listen}:{port} ssl;
    server_name {NAME};
    ssl_certificate {directory}/chain.pem;
    ssl_certificate_key {directory}/leaf.key;
    ssl_stapling on;
    ssl_stapling_file {directory}/staple.der;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
    )
    (directory / "staple-monitor.yaml").write_text(
        f"""# Watches the example nginx of the compose stack.
defaults: {{interval: 30s, timeout: 5s, ca_file: {directory}/root.pem}}
targets:
  - host: {host}
    port: {port}
    server_name: {NAME}
    labels: {{env: example}}
"""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.lab.nginx_files", description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--host", default="nginx", help="name the monitor reaches nginx by")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--listen", default="0.0.0.0", help="address nginx listens on")  # noqa: S104
    args = parser.parse_args(argv)
    write_files(args.dir, args.host, args.port, args.listen)
    print(f"wrote example nginx and staple-monitor files to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
