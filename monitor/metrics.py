"""Every metric name lives here. Results are rendered on each scrape from the store.

``exposition`` serves both ``/metrics`` (background results, with counters) and
``/probe`` (one fresh probe), so the two cannot drift apart. A value that does
not exist is an absent series, never 0 or a sentinel.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.config import Target
from monitor.ocsp import CertStatus, Reason, ResponseStatus
from monitor.runner import Result
from monitor.shard import Shard
from monitor.store import Key, Snapshot

# client_python's own number formatting (Go style: +Inf, NaN, 1.5e+09), untyped upstream.
_number: Callable[[float], str] = floatToGoString

PREFIX = "ocsp_staple_"
# Reasons that mean no handshake completed, so nothing about the server could be judged.
PROBE_FAILURES = frozenset(
    {Reason.DNS_ERROR, Reason.CONNECT_ERROR, Reason.TIMEOUT, Reason.TLS_ERROR}
)


@dataclass(frozen=True)
class Row:
    """One (target, address) to render: identity labels plus its latest result."""

    labels: dict[str, str]
    result: Result
    probes: int | None = None  # None: no counters (a /probe response)
    failures: dict[Reason, int] = field(default_factory=dict)
    interval: float | None = None  # the configured interval, for staleness alerts


# name (without prefix) -> (type, help). README's metric table mirrors this.
RESULT_METRICS: dict[str, tuple[str, str]] = {
    "probe_success": ("gauge", "1 if the TLS handshake completed, so the staple could be judged."),
    "state": ("gauge", "Overall verdict: always 1, with the state and reason as labels."),
    "present": ("gauge", "1 if the server stapled an OCSP response."),
    "response_status": ("gauge", "State set of the staple's OCSP responseStatus."),
    "cert_status": (
        "gauge",
        "State set of the staple's certStatus (only when its signature is valid).",
    ),
    "signature_valid": ("gauge", "1 if the staple's signature verifies with an authorised signer."),
    "fresh": ("gauge", "1 if thisUpdate <= now + skew and now < nextUpdate."),
    "this_update_timestamp_seconds": ("gauge", "thisUpdate of the staple, Unix time."),
    "next_update_timestamp_seconds": ("gauge", "nextUpdate of the staple, Unix time."),
    "produced_at_timestamp_seconds": ("gauge", "producedAt of the staple, Unix time."),
    "revocation_timestamp_seconds": ("gauge", "When the staple says the certificate was revoked."),
    "must_staple": (
        "gauge",
        "1 if the certificate carries the TLS Feature status_request (RFC 7633).",
    ),
    "chain_trusted": ("gauge", "1 if the server's chain verified to the trust store."),
    "certificate_not_after_timestamp_seconds": ("gauge", "notAfter of the server certificate."),
    "last_probe_timestamp_seconds": ("gauge", "When the latest probe started, Unix time."),
    "probe_duration_seconds": ("gauge", "How long the latest probe took, retry included."),
    "probe_retried": ("gauge", "1 if the latest probe had to retry for a missing staple."),
    "probe_interval_seconds": ("gauge", "How often this target is probed (configured)."),
    "probes": ("counter", "Probes made of this target and address."),
    "probe_failures": ("counter", "Probes whose state was not ok, by reason."),
}


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _bool(value: bool | None) -> float | None:
    return None if value is None else float(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def row_samples(row: Row) -> dict[str, str]:
    """The exposition lines of one row, per metric family (absent values have none)."""
    out: dict[str, list[str]] = {}
    base = _label_text(row.labels)

    def put(name: str, value: float | None, extra: str = "") -> None:
        if value is None:
            return
        kind = RESULT_METRICS[name][0]
        full = PREFIX + name + ("_total" if kind == "counter" else "")
        out.setdefault(name, []).append(f"{full}{{{base}{extra}}} {_number(value)}\n")

    r = row.result
    v = r.verdict
    put("probe_success", float(v.reason not in PROBE_FAILURES))
    put("state", 1.0, f',state="{v.state.value}",reason="{v.reason.value}"')
    put("last_probe_timestamp_seconds", r.started_at.timestamp())
    put("probe_duration_seconds", r.duration_seconds)
    put("probe_retried", float(r.retried))
    put("present", _bool(v.staple_present))
    if v.response_status is not None:
        for status in ResponseStatus:
            put("response_status", float(status is v.response_status), f',status="{status.value}"')
    # A status is only worth exporting once the signature proved who said it.
    if v.cert_status is not None and v.signature_valid:
        for cs in CertStatus:
            put("cert_status", float(cs is v.cert_status), f',status="{cs.value}"')
        put("revocation_timestamp_seconds", _ts(v.revocation_time))
    put("signature_valid", _bool(v.signature_valid))
    put("fresh", _bool(v.fresh))
    put("this_update_timestamp_seconds", _ts(v.this_update))
    put("next_update_timestamp_seconds", _ts(v.next_update))
    put("produced_at_timestamp_seconds", _ts(v.produced_at))
    put("must_staple", _bool(v.must_staple))
    put("chain_trusted", _bool(v.chain_trusted))
    put("certificate_not_after_timestamp_seconds", _ts(v.leaf_not_after))
    put("probe_interval_seconds", row.interval)
    if row.probes is not None:
        put("probes", float(row.probes))
        for reason, count in sorted(row.failures.items()):
            put("probe_failures", float(count), f',reason="{reason.value}"')
    return {name: "".join(lines) for name, lines in out.items()}


def exposition(chunks: Iterable[dict[str, str]]) -> str:
    """Text exposition (format 0.0.4) of rows' samples, grouped by family, every family described.

    One render function for /metrics and /probe, so the two cannot drift apart. It writes
    the text itself instead of going through client_python's Metric objects: at 10,000
    targets (250,000 samples) generate_latest took 2 s per scrape, this takes a fraction.
    """
    chunks = list(chunks)
    parts = []
    for name, (kind, help_) in RESULT_METRICS.items():
        parts.append(f"# HELP {PREFIX}{name}{'_total' if kind == 'counter' else ''} {help_}\n")
        parts.append(f"# TYPE {PREFIX}{name}{'_total' if kind == 'counter' else ''} {kind}\n")
        parts.extend(c[name] for c in chunks if name in c)
    return "".join(parts)


def identity_labels(
    target: str, result: Result, extra: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """The labels that name one series: target, address, server_name, then the target's own."""
    labels = {
        "target": target,
        "address": result.address or "",
        "server_name": result.server_name or "",
    }
    labels.update(extra)
    return labels


class ResultsExposition:
    """Renders the store on every scrape; a target gone from the config is gone from here.

    Each (target, address) is rendered once per new result and reused until the next,
    so a scrape costs string joins for the targets that did not change.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        targets: Callable[[], dict[Key, Target]],
    ) -> None:
        self._snapshot = snapshot
        self._targets = targets
        self._cache: dict[tuple[Key, str | None], tuple[object, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def render(self) -> str:
        snap = self._snapshot()
        targets = self._targets()
        chunks = []
        fresh: dict[tuple[Key, str | None], tuple[object, dict[str, str]]] = {}
        with self._lock:
            for key, results in snap.results.items():
                target = targets.get(key)
                if target is None:
                    continue
                for r in results:
                    ckey = (key, r.address)
                    probes = snap.probes[ckey]
                    # The same result object with the same count and labels renders the same.
                    stamp = (id(r), probes, target.labels, target.interval)
                    cached = self._cache.get(ckey)
                    if cached is None or cached[0] != stamp:
                        row = Row(
                            identity_labels(target.name, r, target.labels),
                            r,
                            probes,
                            dict(snap.failures.get(ckey, {})),
                            target.interval.total_seconds(),
                        )
                        cached = (stamp, row_samples(row))
                    fresh[ckey] = cached
                    chunks.append(cached[1])
            self._cache = fresh  # drops what is gone
        return exposition(chunks)


def probe_exposition(results: Sequence[Result], labels: Sequence[tuple[str, str]] = ()) -> str:
    """One /probe request's results, rendered like /metrics (without counters)."""
    return exposition(row_samples(Row(identity_labels(r.target, r, labels), r)) for r in results)


class DaemonMetrics:
    """The daemon's own health: build, config, scheduler, probes in flight."""

    def __init__(
        self,
        registry: CollectorRegistry,
        targets_configured: Callable[[], int],
        targets_assigned: Callable[[], int] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        info = Gauge(PREFIX + "build_info", "Version of staple-monitor and of Python; always 1.",
                     ["version", "python_version"], registry=registry)  # fmt: skip
        info.labels(__version__, platform.python_version()).set(1)
        targets = Gauge(PREFIX + "targets_configured", "Targets in the loaded configuration.",
                        registry=registry)  # fmt: skip
        targets.set_function(lambda: float(targets_configured()))
        assigned = Gauge(
            PREFIX + "targets_assigned",
            "Targets this replica probes on schedule (its shard of the configuration).",
            registry=registry,
        )
        assigned.set_function(lambda: float((targets_assigned or targets_configured)()))
        shard = shard or Shard()
        shard_info = Gauge(PREFIX + "shard", "This replica's shard; always 1.", ["index", "count"],
                           registry=registry)  # fmt: skip
        shard_info.labels(str(shard.index), str(shard.count)).set(1)
        in_flight = Gauge(
            PREFIX + "probes_in_flight", "Probes running right now.", registry=registry
        )
        in_flight.set_function(lambda: float(self._in_flight))
        self.lag = Histogram(
            PREFIX + "scheduler_lag_seconds",
            "How late scheduled probes started, against their planned time.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.skipped = Counter(
            PREFIX + "scheduler_skipped_runs",
            "Runs skipped since start because the previous run of the target was still going"
            " (reason=overlap) or started too late (reason=missed).",
            ["reason"],
            registry=registry,
        )
        for reason in ("overlap", "missed"):
            self.skipped.labels(reason)
        self.reload_ok = Gauge(
            PREFIX + "config_last_reload_successful",
            "1 if the last configuration load succeeded.",
            registry=registry,
        )
        self.reload_time = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, Unix time.",
            registry=registry,
        )

    def probe_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def probe_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def reloaded(self, ok: bool) -> None:
        self.reload_ok.set(float(ok))
        if ok:
            self.reload_time.set(time.time())
