"""The scheduler in-process, with real sockets: spread starts, no overlap, no starvation."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

from cryptography.x509.verification import Store as X509Store
from prometheus_client import CollectorRegistry

from monitor.config import Defaults, make_target
from monitor.lab import pki
from monitor.metrics import DaemonMetrics
from monitor.scheduler import START_RATE, Scheduler, start_offsets
from monitor.store import Store
from monitor.trust import Trust
from tests.peers import peer, silent


def test_first_runs_are_spread_but_small_configs_start_at_once() -> None:
    small = start_offsets(5, timedelta(minutes=5))
    assert max(small) < timedelta(seconds=1)  # results within seconds
    big = start_offsets(5000, timedelta(minutes=5))
    assert timedelta(seconds=249) < max(big) <= timedelta(seconds=5000 / START_RATE)  # 20/s
    assert big == sorted(big)  # one per slot: no two crowd together
    capped = start_offsets(5000, timedelta(minutes=1))
    assert max(capped) < timedelta(minutes=1)  # never beyond one interval
    assert start_offsets(0, timedelta(minutes=1)) == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_hanging_targets_neither_pile_up_nor_starve_the_rest() -> None:
    store = Store()
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry, lambda: 0)
    root = pki.make_root("sched root", pki.utcnow())
    trust = Trust((root.cert,), "test", store=X509Store([root.cert]))
    scheduler = Scheduler(
        store, metrics, workers=4, clock=lambda: datetime.now(UTC), on_change=lambda c: None
    )
    fast_defaults = Defaults(interval=timedelta(seconds=1), timeout=timedelta(seconds=2))
    slow_defaults = Defaults(interval=timedelta(seconds=1), timeout=timedelta(seconds=3))
    with peer(silent) as hang_port:
        hanging = [
            make_target("127.0.0.1", hang_port, f"h{i}.test", slow_defaults) for i in range(3)
        ]
        fast = [
            make_target("127.0.0.1", _closed_port(), f"f{i}.test", fast_defaults) for i in range(10)
        ]
        scheduler.apply({t.key: (t, trust) for t in hanging + fast})
        scheduler.start()
        try:
            time.sleep(6)
        finally:
            scheduler.shutdown(wait=True)
    snap = store.snapshot()
    # Three of four workers sit in hanging handshakes; the fast targets still ran
    # again and again on the one left.
    fast_runs = [snap.probes[(t.key, "127.0.0.1")] for t in fast]
    assert min(fast_runs) >= 2, fast_runs
    # A hanging target never runs twice at once: its overlapping runs were skipped.
    hang_runs = [snap.probes[(t.key, "127.0.0.1")] for t in hanging]
    assert max(hang_runs) <= 2, hang_runs
    skipped = registry.get_sample_value(
        "ocsp_staple_scheduler_skipped_runs_total", {"reason": "overlap"}
    )
    assert skipped is not None
    assert skipped >= 3
    for t in hanging:
        (result,) = store.results(t.key)
        assert result.verdict.reason.value == "timeout"
