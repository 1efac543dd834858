"""Benchmark: the daemon's real code path against peers on the same targets, same machine.

    .venv/bin/python bench/run.py             # full run, writes bench/RESULTS.md (a few minutes)
    .venv/bin/python bench/run.py --smoke     # tiny run, prints figures, writes nothing

Starts nginx on 127.0.0.1 (ECDSA P-256 wildcard leaf, a valid staple through
ssl_stapling_file, several listeners, one name per target), then measures:

- staple-monitor (`staple-monitor run`, as a process: scheduler, probe, verdict, store,
  metrics): sustained probes per second, client CPU seconds per probe (user + system of
  the daemon process), scheduler lag p50/p99, RSS with 1k and 10k targets configured,
  and the time and size of a /metrics scrape at 10k targets;
- prometheus-blackbox-exporter's TCP+TLS probe, driven through its /probe (its CPU);
- `openssl s_time -new` (full handshakes, its user + system time from wait4).

Ratios are ours over theirs, measured in this run. Only 127.0.0.1 is used. Times are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.lab import pki
from tests.lab import PKI, DaemonProcess, Metrics, free_port, need_binary, stop

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BenchLab:
    """nginx with ``listeners`` ports on 127.0.0.1, all stapling a good response."""

    def __init__(self, work: Path, listeners: int) -> None:
        self.pki = PKI(work, pki.utcnow(), "http://127.0.0.1:9/")
        now = self.pki.now
        url = "http://127.0.0.1:9/"
        leaf = pki.make_leaf(["*.bench.test"], self.pki.inter, now, ocsp_url=url)
        staple = pki.make_response(
            leaf.cert, self.pki.inter.cert, self.pki.inter,
            this_update=now, next_update=now + pki.DAY * 7,
        )  # fmt: skip
        pki.write(work / "bench.pem", leaf.cert_pem(), self.pki.inter.cert_pem())
        pki.write(work / "bench.key", leaf.key_pem())
        pki.write(work / "bench.der", staple)
        self.ports = [free_port() for _ in range(listeners)]
        nginx_dir = work / "nginx"
        nginx_dir.mkdir()
        listen = "".join(f"    listen 127.0.0.1:{p} ssl;\n" for p in self.ports)
        temp = "".join(
            f"  {k}_temp_path {nginx_dir}/{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (nginx_dir / "nginx.conf").write_text(
            f"{user}worker_processes 2;\npid {nginx_dir}/nginx.pid;\n"
            f"error_log {nginx_dir}/error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  access_log off;\n{temp}  server {{\n{listen}"
            "    server_name *.bench.test;\n"
            f"    ssl_certificate {work}/bench.pem;\n    ssl_certificate_key {work}/bench.key;\n"
            "    ssl_session_tickets off;\n    ssl_session_cache off;\n"
            f"    ssl_stapling on;\n    ssl_stapling_file {work}/bench.der;\n"
            '    location / { return 200 "ok\\n"; }\n  }\n}\n'
        )
        self.proc = subprocess.Popen(
            [need_binary("nginx"), "-c", str(nginx_dir / "nginx.conf"), "-g", "daemon off;"],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def config(self, path: Path, targets: int, interval: str, workers: int) -> Path:
        lines = [
            f"defaults: {{interval: {interval}, timeout: 5s, retry_no_staple: 0,"
            f" ca_file: {self.pki.path('root.pem')}}}",
            f"workers: {workers}",
            "targets:",
        ]
        lines += [
            f"  - {{host: t{i}.bench.test, port: {self.ports[i % len(self.ports)]},"
            " addresses: [127.0.0.1]}"
            for i in range(targets)
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Window:
    probes: float
    seconds: float
    cpu: float
    lag_p50: float | None
    lag_p99: float | None

    @property
    def rate(self) -> float:
        return self.probes / self.seconds

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu / self.probes if self.probes else float("nan")

    def __str__(self) -> str:
        return (
            f"{self.rate:.0f} probes/s, {self.cpu_per_probe * 1000:.3f} ms CPU/probe,"
            f" lag p50 {self.lag_p50}s p99 {self.lag_p99}s"
        )


def _lag_quantiles(before: Metrics, after: Metrics) -> tuple[float | None, float | None]:
    buckets = []
    for s in after.samples:
        if s.name == "ocsp_staple_scheduler_lag_seconds_bucket":
            le = s.labels["le"]
            prev = before.value("ocsp_staple_scheduler_lag_seconds_bucket", le=le) or 0
            buckets.append((float(le), s.value - prev))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None, None

    def q(x: float) -> float:
        return next(le for le, n in buckets if n >= x * total)

    return q(0.5), q(0.99)


def measure_daemon(daemon: DaemonProcess, seconds: float) -> Window:
    before = daemon.scrape()
    cpu0, t0 = cpu_seconds(daemon.proc.pid), time.monotonic()
    time.sleep(seconds)
    after = daemon.scrape()
    cpu1, t1 = cpu_seconds(daemon.proc.pid), time.monotonic()
    probes = sum(after.find("ocsp_staple_probes_total")) - sum(
        before.find("ocsp_staple_probes_total")
    )
    p50, p99 = _lag_quantiles(before, after)
    return Window(probes, t1 - t0, cpu1 - cpu0, p50, p99)


def daemon_window(lab: BenchLab, work: Path, targets: int, workers: int, seconds: float) -> Window:
    """Run the daemon over ``targets`` targets every second and measure one window."""
    daemon = run_daemon(lab, work, targets, "1s", workers)
    try:
        return measure_daemon(daemon, seconds)
    finally:
        daemon.stop()


def run_daemon(
    lab: BenchLab, work: Path, targets: int, interval: str, workers: int
) -> DaemonProcess:
    config = lab.config(work / f"bench-{targets}.yaml", targets, interval, workers)
    daemon = DaemonProcess(config)
    daemon.wait_for(lambda m: len(m.find("ocsp_staple_state")) == targets, timeout=120)
    return daemon


def timed_scrape(daemon: DaemonProcess, encoding: str) -> tuple[float, int]:
    """Seconds for one /metrics scrape and the bytes sent."""
    t0 = time.monotonic()
    response = daemon.get("/metrics", headers={"Accept-Encoding": encoding}, stream=True)
    body = response.raw.read()
    return time.monotonic() - t0, len(body)


def blackbox(lab: BenchLab, work: Path, seconds: float, concurrency: int) -> tuple[float, float]:
    """(probes per second, CPU seconds per probe) of blackbox_exporter's TLS probe."""
    binary = need_binary("prometheus-blackbox-exporter")
    (work / "blackbox.yml").write_text(
        "modules:\n  tls:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      tls: true\n"
        f"      tls_config:\n        ca_file: {lab.pki.path('root.pem')}\n"
        "        server_name: t0.bench.test\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'blackbox.yml'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/probe"
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        session_local = threading.local()
        ok = requests.get(
            url, params={"module": "tls", "target": f"127.0.0.1:{lab.ports[0]}"}, timeout=10
        )
        assert "probe_success 1" in ok.text, ok.text
        done = 0
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def worker(n: int) -> None:
            nonlocal done
            session_local.s = requests.Session()
            i = n
            while time.monotonic() < deadline:
                target = f"127.0.0.1:{lab.ports[i % len(lab.ports)]}"
                session_local.s.get(url, params={"module": "tls", "target": target}, timeout=10)
                i += concurrency
                with lock:
                    done += 1

        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(worker, range(concurrency)))
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        return done / (t1 - t0), (cpu1 - cpu0) / done
    finally:
        stop(proc)


def s_time(lab: BenchLab, seconds: int) -> tuple[float, float]:
    """(handshakes per second, CPU seconds per handshake) of `openssl s_time -new`."""
    proc = subprocess.Popen(
        [need_binary("openssl"), "s_time", "-new", "-connect", f"127.0.0.1:{lab.ports[0]}",
         "-time", str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not m:
        raise RuntimeError(f"unexpected s_time output: {out}")
    connections, real = int(m.group(1)), float(m.group(2))
    return connections / real, (usage.ru_utime + usage.ru_stime) / connections


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    nginx = subprocess.run(
        [need_binary("nginx"), "-v"], capture_output=True, text=True, check=False
    )
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False)
    from OpenSSL import SSL

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    client = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB; Python {platform.python_version()};"
        f" pyOpenSSL on {client}; {nginx.stderr.strip()}; {openssl.stdout.strip()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI; writes nothing")
    parser.add_argument("--seconds", type=float, default=20, help="length of each measurement")
    parser.add_argument("--throughput-targets", type=int, default=1000)
    parser.add_argument("--lag-targets", type=int, default=500)
    parser.add_argument("--big", type=int, default=10000, help="targets for the memory/scrape run")
    parser.add_argument(
        "--capacity-targets",
        type=int,
        default=2000,
        help="targets every 1s for the run that finds the most probes per second",
    )
    parser.add_argument(
        "--workers", type=int, default=64, help="probe threads (the daemon's default: 64)"
    )
    parser.add_argument(
        "--workers-few",
        type=int,
        default=4,
        help="also measure throughput with this many (loopback targets need few; README Sizing)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.throughput_targets, args.lag_targets, args.big = 2, 20, 10, 200
        args.capacity_targets = 40
    work = Path(tempfile.mkdtemp(prefix="staple-monitor-bench-"))
    lab = BenchLab(work, listeners=8)
    results: dict[str, Any] = {"machine": machine()}
    try:
        print(f"machine: {results['machine']}", flush=True)
        w = daemon_window(lab, work, args.throughput_targets, args.workers, args.seconds)
        results["throughput"] = w
        print(f"throughput ({args.throughput_targets} targets every 1s, {args.workers} workers):"
              f" {w}", flush=True)  # fmt: skip
        w = daemon_window(lab, work, args.throughput_targets, args.workers_few, args.seconds)
        results["throughput_few"] = w
        print(f"throughput with {args.workers_few} workers: {w}", flush=True)
        w = daemon_window(lab, work, args.capacity_targets, args.workers, args.seconds)
        results["capacity"] = w
        print(f"capacity ({args.capacity_targets} targets every 1s): {w}", flush=True)
        w = daemon_window(lab, work, args.lag_targets, args.workers, args.seconds)
        results["lag"] = w
        print(f"lag ({args.lag_targets} targets every 1s): {w}", flush=True)
        for n in (args.big // 10, args.big):
            d = run_daemon(lab, work, n, "30s", args.workers)
            try:
                # First scrape renders every row; later ones reuse the rows that did
                # not change since. Prometheus asks for gzip, so time that too.
                cold, size = timed_scrape(d, "identity")
                warm, _ = timed_scrape(d, "identity")
                gzipped, gz_size = timed_scrape(d, "gzip")
                rss = rss_mib(d.proc.pid)
                results[f"rss_{n}"] = rss
                results[f"scrape_{n}"] = (cold, warm, gzipped, size, gz_size)
                print(f"{n} targets: RSS {rss:.1f} MiB, /metrics cold {cold * 1000:.0f} ms,"
                      f" warm {warm * 1000:.0f} ms, gzip {gzipped * 1000:.0f} ms,"
                      f" {size / 2**20:.2f} MiB ({gz_size / 2**20:.2f} MiB gzip)",
                      flush=True)  # fmt: skip
            finally:
                d.stop()
        bb_rate, bb_cpu = blackbox(lab, work, args.seconds, concurrency=16)
        results["blackbox"] = (bb_rate, bb_cpu)
        print(
            f"blackbox_exporter: {bb_rate:.0f} probes/s, {bb_cpu * 1000:.3f} ms CPU/probe",
            flush=True,
        )
        st_rate, st_cpu = s_time(lab, max(int(args.seconds), 2))
        results["s_time"] = (st_rate, st_cpu)
        print(
            f"openssl s_time -new: {st_rate:.0f} handshakes/s,"
            f" {st_cpu * 1000:.3f} ms CPU/handshake",
            flush=True,
        )
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
    ours = results["throughput"].cpu_per_probe
    print(f"ratio CPU/probe: staple-monitor / blackbox_exporter = {ours / bb_cpu:.2f};"
          f" staple-monitor / openssl s_time = {ours / st_cpu:.2f}")  # fmt: skip
    if not args.smoke:
        write_results(results, args)
    return 0


def write_results(r: dict[str, Any], args: argparse.Namespace) -> None:
    tp: Window = r["throughput"]
    few: Window = r["throughput_few"]
    cap: Window = r["capacity"]
    lag: Window = r["lag"]
    bb_rate, bb_cpu = r["blackbox"]
    st_rate, st_cpu = r["s_time"]
    small, big = args.big // 10, args.big
    rss_small, rss_big = float(r[f"rss_{small}"]), float(r[f"rss_{big}"])
    cold, warm, gzipped, size, gz_size = r[f"scrape_{big}"]
    per_target = (rss_big - rss_small) / (big - small) * 1024
    text = f"""# Benchmark results

Made by `.venv/bin/python bench/run.py` on {time.strftime("%Y-%m-%d")}.
Machine: {r["machine"]}. nginx (2 workers) serves every target from the same 2 cores.
Each figure comes from one {args.seconds:g}s window; rerun for your own machine.
The daemon runs with `workers: {args.workers}` (its default); a second run uses {args.workers_few}.

| measure | staple-monitor | peer | ratio |
|---|---|---|---|
| client CPU per probe (user+sys) | {tp.cpu_per_probe * 1000:.3f} ms \
| blackbox_exporter TCP+TLS probe {bb_cpu * 1000:.3f} ms | {tp.cpu_per_probe / bb_cpu:.2f} |
| the same with {args.workers_few} workers | {few.cpu_per_probe * 1000:.3f} ms \
| {bb_cpu * 1000:.3f} ms | {few.cpu_per_probe / bb_cpu:.2f} |
| client CPU per probe vs a bare handshake | {tp.cpu_per_probe * 1000:.3f} ms \
| `openssl s_time -new` {st_cpu * 1000:.3f} ms | {tp.cpu_per_probe / st_cpu:.2f} |
| sustained probes/s ({args.throughput_targets} targets every 1s) \
| {tp.rate:.0f} ({few.rate:.0f} with {args.workers_few} workers) \
| blackbox_exporter {bb_rate:.0f} (16 concurrent /probe), s_time {st_rate:.0f} (one at a time) | |
| most probes/s sustained ({args.capacity_targets} targets every 1s, more than it can do) \
| {cap.rate:.0f} ({cap.cpu_per_probe * 1000:.3f} ms CPU/probe) | | |
| scheduler lag p50 / p99 at {tp.rate:.0f} probes/s | {tp.lag_p50}s / {tp.lag_p99}s | | |
| scheduler lag p50 / p99 at {lag.rate:.0f} probes/s \
| {lag.lag_p50}s / {lag.lag_p99}s | | |
| RSS with {small} targets configured and probed | {rss_small:.1f} MiB | | |
| RSS with {big} targets configured and probed \
| {rss_big:.1f} MiB ({per_target:.1f} KiB per target) | | |
| `/metrics` at {big} targets, first scrape | {cold * 1000:.0f} ms, {size / 2**20:.1f} MiB | | |
| `/metrics` at {big} targets, later scrapes | {warm * 1000:.0f} ms \
(gzip: {gzipped * 1000:.0f} ms, {gz_size / 2**20:.1f} MiB) | | |

Lag quantiles are bucket upper bounds of `ocsp_staple_scheduler_lag_seconds`.
Scrape times are over HTTP from another process while the daemon keeps probing (333
probes/s at 10,000 targets every 30s), client reading included; the rendering itself
is a fraction of that.
"""
    (Path(__file__).parent / "RESULTS.md").write_text(text)
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    sys.exit(main())
