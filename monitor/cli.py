"""The ``staple-monitor`` command. Wires the modules together; nothing imports it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from monitor import __version__
from monitor.durations import parse_duration
from monitor.ocsp import DEFAULT_SKEW, DEFAULT_WARN_WITHIN, State
from monitor.probe import TLSVersion
from monitor.report import render_json, render_text, worst_state
from monitor.runner import CheckSpec, check
from monitor.trust import TrustError, load_trust

# Nagios plugin convention: a check that cannot run (bad usage) is UNKNOWN.
UNKNOWN_EXIT = State.UNKNOWN.exit_code


class _Parser(argparse.ArgumentParser):
    usage_exit = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")


def parse_target(text: str, default_port: int = 443) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError says what is wrong."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError(f"target {text!r} contains spaces or control characters")
    m = _HOSTPORT.match(text)
    if not m:
        if text.count(":") > 1 and not text.startswith("["):
            raise ValueError(f"IPv6 address must be in brackets, like [{text}]:443")
        raise ValueError(f"expected HOST[:PORT] or [IPv6]:PORT, got {text!r}")
    host = m.group("v6") or m.group("host") or ""
    if len(host) > 253:
        raise ValueError(f"host name is longer than 253 characters ({len(host)})")
    port_text = m.group("port")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be an integer 1-65535, got {port_text!r}")
    return host, int(port_text)


def _add_check(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "check",
        help="probe one host now and print the verdict (Nagios exit codes)",
        description=(
            "Probe HOST[:PORT] (default port 443) with a TLS handshake that asks for a stapled"
            " OCSP response, and judge the staple. Every address the name resolves to (A and"
            " AAAA) is probed unless --address is given."
        ),
        epilog=(
            "exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the Nagios plugin convention;\n"
            "with several addresses, the worst one counts)\n\n"
            "examples:\n"
            "  staple-monitor check www.example.com\n"
            "  staple-monitor check www.example.com:8443 --address 192.0.2.10 --json\n"
            "  staple-monitor check 10.1.2.3:443 --servername intranet.corp --ca-file corp-root.pem"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.usage_exit = UNKNOWN_EXIT
    p.add_argument("target", metavar="HOST[:PORT]")
    p.add_argument(
        "--servername", metavar="NAME", help="SNI name and certificate name (default: HOST)"
    )
    p.add_argument(
        "--address",
        metavar="IP",
        action="append",
        default=[],
        help="probe this address instead of resolving HOST (repeat for several)",
    )
    versions = p.add_mutually_exclusive_group()
    versions.add_argument(
        "--tls1.2",
        dest="tls",
        action="store_const",
        const=TLSVersion.TLS1_2,
        help="offer TLS 1.2 only",
    )
    versions.add_argument(
        "--tls1.3",
        dest="tls",
        action="store_const",
        const=TLSVersion.TLS1_3,
        help="offer TLS 1.3 only",
    )
    p.add_argument("--ca-file", metavar="PEM", help="trust anchors (default: the system bundle)")
    p.add_argument(
        "--warn-within",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_WARN_WITHIN,
        help="WARNING when nextUpdate is closer than this (default 24h)",
    )
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        type=_duration,
        default=timedelta(seconds=10),
        help="deadline for connect plus handshake, per address (default 10s)",
    )
    p.add_argument(
        "--retry-delay",
        metavar="DURATION",
        type=_duration,
        default=timedelta(seconds=2),
        help="when no staple came, retry once after this; 0 disables (default 2s)",
    )
    p.add_argument(
        "--skew",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_SKEW,
        help="clock skew allowed for thisUpdate (default 5m)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_check, tls=TLSVersion.ANY)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"staple-monitor check: {exc}", file=sys.stderr)
        return UNKNOWN_EXIT
    if args.timeout <= timedelta(0):
        print("staple-monitor check: --timeout must be more than 0", file=sys.stderr)
        return UNKNOWN_EXIT
    try:
        trust = load_trust(args.ca_file)
    except TrustError as exc:
        print(f"staple-monitor check: --ca-file {exc}", file=sys.stderr)
        return UNKNOWN_EXIT
    spec = CheckSpec(
        host=host,
        port=port,
        server_name=args.servername,
        addresses=tuple(args.address),
        tls_version=args.tls,
        timeout=args.timeout,
        warn_within=args.warn_within,
        skew=args.skew,
        retry_no_staple=args.retry_delay,
    )
    results = check(spec, trust, clock=lambda: datetime.now(UTC))
    if args.json:
        print(render_json(spec.target, results))
    else:
        print(render_text(spec.target, results, datetime.now(UTC)), end="")
    return worst_state(results).exit_code


def build_parser() -> _Parser:
    """The full argument parser (exposed for --help tests and docs)."""
    parser = _Parser(prog="staple-monitor", description="Watch OCSP stapling on TLS servers.")
    parser.add_argument("--version", action="version", version=f"staple-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_check(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
