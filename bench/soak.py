"""Soak: the daemon against the nginx lab for minutes, with faults injected.

    .venv/bin/python bench/soak.py [--seconds 240] [--interval 1s]

Starts the test lab on 127.0.0.0/8 (real nginx, a real `openssl ocsp` responder, hanging
peers), runs `staple-monitor run` against it with a short interval, and meanwhile reloads
and restarts nginx, kills and restarts the responder, and reloads the daemon. Prints probes
made, memory over time, state changes, and whether every target is right after recovery.
Exit status 1 if the daemon crashed, memory grew, a state change was logged twice, or
metrics were wrong after recovery. Talks only to loopback addresses.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.lab import pki
from tests.lab import PKI, DaemonProcess, Metrics, Nginx, Responder, Server, free_port
from tests.peers import drip, peer, silent

# scenario -> what it must show once everything has recovered
FINAL = {
    "live_a": "ok",
    "live_b": "ok",
    "live_13": "ok",
    "good": "ok",
    "expired": "expired",
    "revoked": "revoked",
    "off": "no_staple",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staple-monitor-soak-"))
    responder_port = free_port()
    lab = PKI(work, pki.utcnow(), f"http://127.0.0.1:{responder_port}/")
    responder = Responder(lab, responder_port)
    ports = {name: free_port() for name in FINAL}
    servers = [
        Server("live_a", "live", port=ports["live_a"]),
        Server("live_b", "live", port=ports["live_b"], address="127.0.0.1"),
        Server("live_13", "live", port=ports["live_13"], protocols="TLSv1.3"),
        Server("good", "fixed", port=ports["good"], staple_file="good"),
        Server("expired", "fixed", port=ports["expired"], staple_file="expired"),
        Server("revoked", "fixed", port=ports["revoked"], staple_file="revoked"),
        Server("off", "live", port=ports["off"], stapling=False),
    ]
    nginx = Nginx(lab, servers)
    responder.start()
    nginx.start()
    with peer(silent) as silent_port, peer(drip) as drip_port:
        config = work / "soak.yaml"
        lines = [
            f"defaults: {{interval: {args.interval}, timeout: 3s, retry_no_staple: 500ms,"
            f" ca_file: {lab.path('root.pem')}}}",
            "targets:",
        ]
        lines += [
            f'  - {{host: lab.test, port: {p}, addresses: [127.0.0.1], labels: {{s: "{n}"}}}}'
            for n, p in ports.items()
        ]
        lines += [
            f"  - {{host: 127.0.0.1, port: {silent_port}, labels: {{s: hang}}}}",
            f"  - {{host: 127.0.0.1, port: {drip_port}, labels: {{s: drip}}}}",
        ]
        config.write_text("\n".join(lines) + "\n")
        daemon = DaemonProcess(config)
        t0 = time.monotonic()
        rss: list[tuple[float, float]] = []
        faults: list[tuple[float, str]] = []

        def nginx_reload() -> None:
            assert nginx.proc is not None
            nginx.proc.send_signal(signal.SIGHUP)

        def nginx_restart() -> None:
            nginx.stop()
            nginx.start()

        def daemon_reload() -> None:
            daemon.proc.send_signal(signal.SIGHUP)

        plan: list[tuple[float, str, Callable[[], None]]] = [
            (0.10, "nginx reload", nginx_reload),
            (0.20, "responder killed", responder.stop),
            (0.30, "nginx restarted (responder down)", nginx_restart),
            (0.45, "daemon reload (SIGHUP)", daemon_reload),
            (0.55, "responder started", responder.start),
            (0.65, "nginx reload (fetches again)", nginx_reload),
            (0.75, "nginx stopped", nginx.stop),
            (0.80, "nginx started", nginx.start),
        ]
        crashed = False
        while (elapsed := time.monotonic() - t0) < args.seconds:
            while plan and elapsed >= plan[0][0] * args.seconds:
                _, what, action = plan.pop(0)
                action()
                faults.append((elapsed, what))
                print(f"{elapsed:6.1f}s  fault: {what}", flush=True)
            if daemon.proc.poll() is not None:
                crashed = True
                break
            m = daemon.scrape()
            value = m.value("process_resident_memory_bytes")
            if value is not None:
                rss.append((elapsed, value / 2**20))
            time.sleep(2)
        final = daemon.wait_for(lambda m: _all_right(m), timeout=30) if not crashed else None
        daemon.stop()
        logs = daemon.logs()
    nginx.stop()
    responder.stop()
    return report(args.seconds, rss, faults, final, logs, crashed)


def _all_right(m: Metrics) -> bool:
    return all(
        m.find("ocsp_staple_state", s=name, reason=reason) == [1] for name, reason in FINAL.items()
    )


def report(
    seconds: float,
    rss: list[tuple[float, float]],
    faults: list[tuple[float, str]],
    final: Metrics | None,
    logs: list[dict[str, object]],
    crashed: bool,
) -> int:
    changes = [e for e in logs if e.get("event") == "state_change"]
    by_key: dict[tuple[object, object], list[str]] = defaultdict(list)
    twice = 0
    for e in changes:
        seq = by_key[(e["target"], e["address"])]
        now = f"{e['state']}/{e['reason']}"
        if seq and seq[-1] == now:
            twice += 1  # the same state logged again: not a change
        seq.append(now)
    probes = sum(final.find("ocsp_staple_probes_total")) if final else 0
    half = len(rss) // 2
    first = statistics.mean(v for _, v in rss[: max(half, 1)]) if rss else 0
    second = statistics.mean(v for _, v in rss[half:]) if rss else 0
    print()
    print(f"soak: {seconds:.0f}s, {probes:.0f} probes, {len(faults)} faults injected")
    print(
        f"RSS MiB: start {rss[0][1]:.1f}, first-half mean {first:.1f},"
        f" second-half mean {second:.1f}, max {max(v for _, v in rss):.1f}"
    )
    print(f"state changes logged: {len(changes)} over {len(by_key)} target/addresses;"
          f" repeated without a change: {twice}")  # fmt: skip
    for key, seq in sorted(by_key.items(), key=str):
        print(f"  {key[0]} {key[1]}: {' -> '.join(seq)}")
    print(f"after recovery every target right: {final is not None}; daemon crashed: {crashed}")
    ok = not crashed and final is not None and twice == 0 and second - first < 15
    print("SOAK PASSED" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
