"""The ``staple-monitor`` command. Wires the modules together; nothing imports it."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from monitor import __version__, logs
from monitor.config import Config, ConfigError, load_config
from monitor.daemon import Daemon, ProbeOptions
from monitor.durations import parse_duration
from monitor.http import App, parse_listen_address, serve
from monitor.ocsp import DEFAULT_LAG_WARNING, DEFAULT_SKEW, DEFAULT_WARN_WITHIN, State
from monitor.probe import TLSVersion
from monitor.report import render_json, render_text, worst_state
from monitor.responder import ResponderClient, ResponderSettings
from monitor.runner import CheckSpec, check, parse_target
from monitor.shard import parse_shard
from monitor.trust import TrustError, load_trust
from monitor.webconfig import WebConfig, load_web_config

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
    p.add_argument(
        "--no-responder",
        dest="responder",
        action="store_false",
        help="do not cross-check the staple with the CA's OCSP responder (asked once by default)",
    )
    p.add_argument(
        "--responder-timeout",
        metavar="DURATION",
        type=_duration,
        default=ResponderSettings().timeout,
        help="deadline for the responder's answer (default 5s)",
    )
    p.add_argument(
        "--staple-lag-warning",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_LAG_WARNING,
        help="WARNING (staple_lagging) when the staple is this much older than the"
        " responder's answer (default 12h)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_check, tls=TLSVersion.ANY)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"staple-monitor check: {exc}", file=sys.stderr)
        return UNKNOWN_EXIT
    for flag, value in (("--timeout", args.timeout), ("--responder-timeout",
                                                      args.responder_timeout)):  # fmt: skip
        if value <= timedelta(0):
            print(f"staple-monitor check: {flag} must be more than 0", file=sys.stderr)
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
        responder_check=args.responder,
        lag_warning=args.staple_lag_warning,
    )
    # Addresses that serve the same certificate share one query; one command asks
    # each certificate once, so no rate limit is needed.
    responder = ResponderClient(
        ResponderSettings(timeout=args.responder_timeout, min_interval=timedelta(0))
    )
    results = check(spec, trust, clock=lambda: datetime.now(UTC), responder=responder)
    if args.json:
        print(render_json(spec.target, results))
    else:
        print(render_text(spec.target, results, datetime.now(UTC)), end="")
    return worst_state(results).exit_code


DEFAULT_LISTEN = ":9851"


def _add_run(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon: probe the configured targets on schedule, serve metrics",
        description=(
            "Probe every target of the configuration file on its interval and serve the"
            " results as Prometheus metrics. SIGHUP or POST /-/reload re-reads the file;"
            " an invalid file is rejected and the running configuration kept."
        ),
        epilog=(
            "endpoints: /metrics, /probe?target=HOST:PORT[&server_name=NAME][&debug=true],\n"
            "           /healthz, /-/reload (POST), / (status page)\n"
            "exit status: 0 after a clean shutdown, 2 for an invalid configuration or usage"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_args(p)
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="only check the configuration file and exit (0 valid, 2 invalid)",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve HTTP (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        metavar="FILE",
        help="TLS and basic auth for the HTTP endpoint, in the Prometheus exporter-toolkit"
        " format (see README: Securing the endpoint)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        default="0/1",
        help="probe only this replica's share of the targets: replica I of N (0-based; I may"
        " end a name, as in $(POD_NAME)/3 for a StatefulSet). Default 0/1: every target",
    )
    p.add_argument(
        "--web.probe-any-target",
        dest="probe_any",
        action="store_true",
        help="let /probe probe targets that are not in the configuration (this lets"
        " anyone who reaches the endpoint open TLS connections to any host)",
    )
    p.add_argument(
        "--web.probe-concurrency",
        dest="probe_concurrency",
        type=int,
        default=10,
        metavar="N",
        help="at most N /probe requests at once; more get 503 (default 10)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        choices=["debug", "info", "warn", "error"],
        default="info",
        help="default info: one line per state change",
    )
    p.add_argument("--log.format", dest="log_format", choices=["text", "json"], default="text")
    p.set_defaults(func=_cmd_run)
    v = sub.add_parser("validate", help="check a configuration file and exit (0 valid, 2 invalid)")
    _config_args(v)
    v.set_defaults(func=_cmd_validate)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config.file",
        dest="config_file",
        required=True,
        metavar="FILE",
        help="the YAML configuration (see README: Configuration)",
    )


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(
            f"staple-monitor: invalid configuration ({len(exc.problems)} problem(s)):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _cmd_validate(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config_file)
    if config is None:
        return 2
    print(f"{config.source}: valid, {len(config.targets)} targets")
    return 0


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def _limit_malloc_arenas() -> None:
    """Two malloc arenas instead of glibc's eight per core, unless MALLOC_ARENA_MAX is set.

    Each of the probe threads would otherwise get an arena of its own, and results
    kept from one thread's arena among another's freed memory keep pages resident:
    at 10,000 targets with 64 workers, 137 MiB against 119 MiB with two arenas.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.config_check:
        return _cmd_validate(args)
    _limit_malloc_arenas()
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        print(f"staple-monitor: --shard: {exc}", file=sys.stderr)
        return 2
    if args.probe_concurrency < 1:
        print("staple-monitor: --web.probe-concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        parse_listen_address(args.listen)
    except ValueError as exc:
        print(f"staple-monitor: --web.listen-address: {exc}", file=sys.stderr)
        return 2
    if _load_or_report(args.config_file) is None:
        return 2
    web = WebConfig()
    if args.web_config:
        try:
            web = load_web_config(args.web_config)
        except ConfigError as exc:
            print("staple-monitor: invalid --web.config.file:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
    logs.setup(args.log_level, args.log_format)
    options = ProbeOptions(allow_any_target=args.probe_any, concurrency=args.probe_concurrency)
    try:
        daemon = Daemon(args.config_file, probe_options=options, shard=shard)
    except ConfigError as exc:  # the file changed between the check and now
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    return run_daemon(daemon, args.listen, web=web)


def run_daemon(
    daemon: Daemon,
    listen: str,
    ready: Callable[[str], None] | None = None,
    web: WebConfig | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit status."""
    try:
        server = serve(App(daemon, web), listen)
    except OSError as exc:
        print(f"staple-monitor: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    hup = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    daemon.start()
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    host, port = str(server.server_address[0]), server.server_address[1]
    scheme = "https" if web is not None and web.tls is not None else "http"
    url = f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"
    logging.getLogger("staple_monitor").info("listening on %s", url)
    if ready:
        ready(url)
    while not stop.is_set():
        if hup.wait(0.2):
            hup.clear()
            daemon.reload()
    logging.getLogger("staple_monitor").info("shutting down")
    server.shutdown()
    server.server_close()
    daemon.shutdown()
    return 0


def _add_demo(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "demo",
        help="start a small lab on 127.0.0.1 and run the daemon against it",
        description=(
            "Start a throwaway CA, an OCSP responder and six TLS servers on 127.0.0.1 (good,"
            " expiring, expired, revoked and missing staples, and a stale good staple for a"
            " certificate the CA revoked), then run the daemon against"
            " them. Needs no configuration and no network. Ctrl-C stops everything."
        ),
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:9851",
        metavar="HOST:PORT",
        help="where to serve HTTP (default 127.0.0.1:9851)",
    )
    p.add_argument(
        "--interval",
        type=_duration,
        default=timedelta(seconds=15),
        metavar="DURATION",
        help="how often each lab server is probed (default 15s)",
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from monitor.durations import format_duration
    from monitor.lab.demo import SCENARIOS, start_lab

    logs.setup("info", "text")
    lab = start_lab(interval=format_duration(args.interval))
    try:
        daemon = Daemon(str(lab.config_file))

        def ready(url: str) -> None:
            print(f"staple-monitor demo: lab in {lab.dir}", flush=True)
            for name, text in SCENARIOS.items():
                port = lab.servers[name].port
                print(f"  {name:<9} {name}.demo.test:{port} on 127.0.0.1: {text}", flush=True)
            print(f"  responder {lab.responder.url}", flush=True)
            print(f"status page: {url}\nmetrics:     {url}metrics\nCtrl-C to stop.", flush=True)

        return run_daemon(daemon, args.listen, ready)
    finally:
        lab.stop()


def build_parser() -> _Parser:
    """The full argument parser (exposed for --help tests and docs)."""
    parser = _Parser(prog="staple-monitor", description="Watch OCSP stapling on TLS servers.")
    parser.add_argument("--version", action="version", version=f"staple-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_check(sub)
    _add_run(sub)
    _add_demo(sub)
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
