"""Every metric name lives here. Results are rendered on each scrape from the store.

``exposition`` serves both ``/metrics`` (background results, with counters) and
``/probe`` (one fresh probe), so the two cannot drift apart. A value that does
not exist is an absent series, never 0 or a sentinel.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.config import Target
from monitor.ocsp import CertStatus, Reason, ResponseStatus, Verdict
from monitor.responder import Query, ResponderClient
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
    "responder_lag_seconds": (
        "gauge",
        "How much older the staple's thisUpdate is than the CA responder's latest answer.",
    ),
}

RESPONDER_PREFIX = "ocsp_responder_"
# The cross-check with the CA's responder, per (target, address), labelled with the
# responder's URL. Status and times come from the latest usable answer.
RESPONDER_METRICS: dict[str, tuple[str, str]] = {
    "up": ("gauge", "1 if the responder's latest answer was a valid, signed answer about the"
                    " certificate; 0 if it failed (down, slow, HTTP error, garbage)."),
    "latency_seconds": ("gauge", "How long the latest query to the responder took."),
    "http_status": ("gauge", "HTTP status of the responder's latest answer."),
    "cert_status": ("gauge", "State set of certStatus in the responder's latest usable answer."),
    "this_update_timestamp_seconds": ("gauge", "thisUpdate of the responder's answer, Unix time."),
    "next_update_timestamp_seconds": ("gauge", "nextUpdate of the responder's answer, Unix time."),
    "revocation_timestamp_seconds": (
        "gauge",
        "When the responder says the certificate was revoked, Unix time.",
    ),
    "last_query_timestamp_seconds": ("gauge", "When the responder was last asked, Unix time."),
}  # fmt: skip


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _bool(value: bool | None) -> float | None:
    return None if value is None else float(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


Samples = list[tuple[str, float]]  # (extra label text, value) of one family for one row
Scalar = Callable[[Row], float | None]  # the one value of a family for one row, or None


# Label text of the enum-valued samples, made once rather than per sample.
_RESPONSE_STATUS = tuple((s, f',status="{s.value}"') for s in ResponseStatus)
_CERT_STATUS = tuple((s, f',status="{s.value}"') for s in CertStatus)
_STATE = {(r.state, r): f',state="{r.state.value}",reason="{r.value}"' for r in Reason}
_REASON = {r: f',reason="{r.value}"' for r in Reason}


def _response_status(row: Row) -> Samples:
    status = row.result.verdict.response_status
    if status is None:
        return []
    return [(extra, float(s is status)) for s, extra in _RESPONSE_STATUS]


def _signed(row: Row) -> bool:
    # A status is only worth exporting once the signature proved who said it.
    v = row.result.verdict
    return v.cert_status is not None and bool(v.signature_valid)


def _cert_status(row: Row) -> Samples:
    status = row.result.verdict.cert_status
    if not _signed(row):
        return []
    return [(extra, float(s is status)) for s, extra in _CERT_STATUS]


def _state(row: Row) -> Samples:
    v = row.result.verdict
    # A verdict's state follows from its reason, except in hand-made test verdicts.
    extra = _STATE.get((v.state, v.reason))
    return [(extra or f',state="{v.state.value}",reason="{v.reason.value}"', 1.0)]


def _failures(row: Row) -> Samples:
    if row.probes is None:
        return []
    return [(_REASON[k], float(n)) for k, n in sorted(row.failures.items())]


def _latest(row: Row) -> Query | None:
    view = row.result.responder
    return None if view is None else view.latest


def _good(row: Row) -> Verdict | None:
    view = row.result.responder
    if view is None or view.latest is None or view.good is None:
        return None
    return view.good.verdict


def _responder_cert_status(row: Row) -> Samples:
    good = _good(row)
    if good is None:
        return []
    return [(extra, float(s is good.cert_status)) for s, extra in _CERT_STATUS]


def _verdict(row: Row) -> Verdict:
    return row.result.verdict


# Per family (RESULT_METRICS order): a Scalar for families with one sample per row, a
# function giving Samples for the others. An absent value gives no sample.
_SAMPLES: dict[str, Scalar | tuple[Callable[[Row], Samples]]] = {
    "probe_success": lambda row: float(row.result.verdict.reason not in PROBE_FAILURES),
    "state": (_state,),
    "present": lambda row: _bool(_verdict(row).staple_present),
    "response_status": (_response_status,),
    "cert_status": (_cert_status,),
    "signature_valid": lambda row: _bool(_verdict(row).signature_valid),
    "fresh": lambda row: _bool(_verdict(row).fresh),
    "this_update_timestamp_seconds": lambda row: _ts(_verdict(row).this_update),
    "next_update_timestamp_seconds": lambda row: _ts(_verdict(row).next_update),
    "produced_at_timestamp_seconds": lambda row: _ts(_verdict(row).produced_at),
    "revocation_timestamp_seconds": lambda row: (
        _ts(_verdict(row).revocation_time) if _signed(row) else None
    ),
    "must_staple": lambda row: _bool(_verdict(row).must_staple),
    "chain_trusted": lambda row: _bool(_verdict(row).chain_trusted),
    "certificate_not_after_timestamp_seconds": lambda row: _ts(_verdict(row).leaf_not_after),
    "last_probe_timestamp_seconds": lambda row: row.result.started_at.timestamp(),
    "probe_duration_seconds": lambda row: row.result.duration_seconds,
    "probe_retried": lambda row: float(row.result.retried),
    "probe_interval_seconds": lambda row: row.interval,
    "probes": lambda row: None if row.probes is None else float(row.probes),
    "probe_failures": (_failures,),
    "responder_lag_seconds": lambda row: _verdict(row).staple_lag_seconds,
}
assert _SAMPLES.keys() == RESULT_METRICS.keys()

# The same for the responder's families, whose series also carry the responder label.
_RESPONDER_SAMPLES: dict[str, Scalar | tuple[Callable[[Row], Samples]]] = {
    "up": lambda row: None if (q := _latest(row)) is None else float(q.up),
    "latency_seconds": lambda row: None if (q := _latest(row)) is None else q.latency_seconds,
    "http_status": lambda row: (
        None if (q := _latest(row)) is None or q.http_status is None else float(q.http_status)
    ),
    "cert_status": (_responder_cert_status,),
    "this_update_timestamp_seconds": lambda row: _ts(g.this_update if (g := _good(row)) else None),
    "next_update_timestamp_seconds": lambda row: _ts(g.next_update if (g := _good(row)) else None),
    "revocation_timestamp_seconds": lambda row: _ts(
        g.revocation_time if (g := _good(row)) else None
    ),
    "last_query_timestamp_seconds": lambda row: (
        None if (q := _latest(row)) is None else q.asked_at.timestamp()
    ),
}
assert _RESPONDER_SAMPLES.keys() == RESPONDER_METRICS.keys()

# Every per-row family: (full name, type, help, samples, carries the responder label).
_ROW_FAMILIES = [
    (PREFIX + name + ("_total" if kind == "counter" else ""), kind, help_, _SAMPLES[name], False)
    for name, (kind, help_) in RESULT_METRICS.items()
] + [
    (RESPONDER_PREFIX + name, kind, help_, _RESPONDER_SAMPLES[name], True)
    for name, (kind, help_) in RESPONDER_METRICS.items()
]

# Rows are rendered and sent this many at a time, family by family.
_BATCH = 512


def _number_text(value: float) -> str:
    # repr spells every finite float exactly as Prometheus parses it (and 4x faster
    # than client_python's formatter); NaN and infinities fail the comparison and get
    # client_python's spelling (NaN, +Inf).
    return repr(value) if -1e300 < value < 1e300 else _number(value)


def exposition_parts(rows: Sequence[Row]) -> Iterator[str]:
    """Text exposition (format 0.0.4) of rows, grouped by family, every family described.

    Rendered family by family in batches of a few hundred rows and streamed, so a
    10,000-target scrape (35 MB of text) is never held whole: a daemon's resident
    memory stays that of its targets, not of its largest scrape.

    One render function for /metrics and /probe, so the two cannot drift apart. It writes
    the text itself instead of going through client_python's Metric objects: at 10,000
    targets (250,000 samples) generate_latest took 2 s per scrape, this takes a fraction.
    """
    bases = [_label_text(row.labels) for row in rows]
    # Responder series add the responder's URL; rows without an answer have none.
    rbases = [
        None if (q := _latest(row)) is None else f'{base},responder="{_escape(q.url)}"'
        for row, base in zip(rows, bases, strict=True)
    ]
    for full, kind, help_, samples, responder in _ROW_FAMILIES:
        head = f"# HELP {full} {help_}\n# TYPE {full} {kind}\n"
        labels = rbases if responder else bases
        for start in range(0, max(len(rows), 1), _BATCH):
            pairs = [
                (row, base)
                for row, base in zip(
                    rows[start : start + _BATCH], labels[start : start + _BATCH], strict=True
                )
                if base is not None
            ]
            if isinstance(samples, tuple):
                lines = [
                    f"{full}{{{base}{extra}}} {_number_text(value)}\n"
                    for row, base in pairs
                    for extra, value in samples[0](row)
                ]
            else:
                lines = [
                    f"{full}{{{base}}} {repr(v) if -1e300 < v < 1e300 else _number(v)}\n"
                    for row, base in pairs
                    if (v := samples(row)) is not None
                ]
            yield head + "".join(lines)
            head = ""


def exposition(rows: Iterable[Row]) -> str:
    """The whole exposition as one string (for /probe and tests)."""
    return "".join(exposition_parts(list(rows)))


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

    Nothing rendered is kept between scrapes: holding 10,000 targets' text (3 KiB each)
    cost more resident memory than rendering it again costs time.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        targets: Callable[[], dict[Key, Target]],
    ) -> None:
        self._snapshot = snapshot
        self._targets = targets

    def render(self) -> str:
        """The whole exposition as one string."""
        return "".join(self.render_parts())

    def render_parts(self) -> Iterator[str]:
        """The exposition in pieces, for streaming."""
        return exposition_parts(self._rows())

    def _rows(self) -> list[Row]:
        snap = self._snapshot()
        targets = self._targets()
        rows = []
        for key, results in snap.results.items():
            target = targets.get(key)
            if target is None:
                continue
            for r in results:
                ckey = (key, r.address)
                rows.append(
                    Row(
                        identity_labels(target.name, r, target.labels),
                        r,
                        snap.probes[ckey],
                        dict(snap.failures.get(ckey, {})),
                        target.interval.total_seconds(),
                    )
                )
        return rows


def probe_exposition(results: Sequence[Result], labels: Sequence[tuple[str, str]] = ()) -> str:
    """One /probe request's results, rendered like /metrics (without counters)."""
    return exposition(Row(identity_labels(r.target, r, labels), r) for r in results)


class _ResponderCollector(Collector):
    """The responder client's counters, per responder (scheme://host:port)."""

    def __init__(self, client: ResponderClient) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        stats = self._client.stats_snapshot()
        queries = CounterMetricFamily(
            RESPONDER_PREFIX + "queries",
            "Queries sent to OCSP responders by the cross-check, by outcome (ok or why not).",
            labels=["responder", "outcome"],
        )
        cached = CounterMetricFamily(
            RESPONDER_PREFIX + "cache_hits",
            "Checks answered from the cross-check's cache instead of a query.",
            labels=["responder"],
        )
        limited = CounterMetricFamily(
            RESPONDER_PREFIX + "rate_limited",
            "Checks whose due query the per-responder rate limit held back.",
            labels=["responder"],
        )
        for (where, outcome), count in sorted(stats.items()):
            if outcome == "cached":
                cached.add_metric([where], count)
            elif outcome == "rate_limited":
                limited.add_metric([where], count)
            else:
                queries.add_metric([where, outcome], count)
        yield queries
        yield cached
        yield limited


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
        self._registry = registry
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

    def watch_responder(self, client: ResponderClient) -> None:
        """Export the cross-check's query counts (rendered from the client on each scrape)."""
        self._registry.register(_ResponderCollector(client))

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
