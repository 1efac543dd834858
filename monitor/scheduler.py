"""Scheduled probes: one APScheduler 3 job per target on a bounded thread pool."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import Target
from monitor.gate import GATE
from monitor.metrics import DaemonMetrics
from monitor.responder import ResponderClient
from monitor.runner import Clock, check
from monitor.store import Key, StateChange, Store
from monitor.trust import Trust

log = logging.getLogger("staple_monitor")

# New targets start at most this many per second, spread evenly, so a large config
# causes no burst at start while a small one has results within seconds.
START_RATE = 20.0
FIRST_RUN_DELAY = timedelta(seconds=1)


def job_id(key: Key) -> str:
    """A readable, unique job id for a target key."""
    host, port, server_name = key
    return f"{host}:{port}/{server_name or '-'}"


def start_offsets(count: int, shortest_interval: timedelta) -> list[timedelta]:
    """When each of ``count`` new targets first runs: one at a random moment of each of
    ``count`` equal slots, the slots spanning at most one interval (and at most
    START_RATE starts a second). Each target then keeps its own phase, so runs stay
    spread out instead of firing together, and the first results come within seconds."""
    if count == 0:
        return []
    slot = min(shortest_interval.total_seconds(), count / START_RATE) / count
    return [timedelta(seconds=slot * (i + random.random())) for i in range(count)]  # noqa: S311


class Scheduler:
    """Runs each target's check on its interval and records results in the store."""

    def __init__(
        self,
        store: Store,
        metrics: DaemonMetrics,
        *,
        workers: int,
        clock: Clock,
        on_change: Callable[[StateChange], None],
        responder: ResponderClient | None = None,
    ) -> None:
        self._store = store
        self._responder = responder
        self._metrics = metrics
        self._clock = clock
        self._on_change = on_change
        self._targets: Mapping[Key, tuple[Target, Trust]] = {}
        self._aps = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._aps.add_listener(
            self._on_event,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )
        # We count skipped runs in metrics; APScheduler would log a warning per skip.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)

    def apply(self, targets: Mapping[Key, tuple[Target, Trust]]) -> None:
        """Make the jobs match ``targets``: unchanged ones keep their schedule."""
        old = self._targets
        self._targets = dict(targets)
        for key in old.keys() - targets.keys():
            self._remove(key)
        fresh = [k for k, (t, _) in targets.items() if k not in old or old[k][0] != t]
        if not fresh:
            return
        shortest = min(targets[k][0].interval for k in fresh)
        # A start_date already past when the scheduler looks at it would push the first
        # run a whole interval out: begin a moment from now.
        now = datetime.now(UTC) + FIRST_RUN_DELAY
        for key, offset in zip(fresh, start_offsets(len(fresh), shortest), strict=True):
            interval = targets[key][0].interval
            self._aps.add_job(
                self._run,
                IntervalTrigger(
                    seconds=interval.total_seconds(), start_date=now + offset, timezone=UTC
                ),
                args=[key],
                id=job_id(key),
                replace_existing=True,
                # A run that could not start on time still runs once, as long as
                # it is less than an interval late; later ones collapse into it.
                misfire_grace_time=max(1, int(interval.total_seconds())),
            )

    def _remove(self, key: Key) -> None:
        job = self._aps.get_job(job_id(key))
        if job is not None:
            job.remove()

    def start(self) -> None:
        self._aps.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running probes finish (each has a timeout)."""
        if self._aps.running:
            self._aps.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def _run(self, key: Key) -> float:
        started = time.time()
        entry = self._targets.get(key)
        if entry is None:  # removed by a reload after this run was queued
            return started
        target, trust = entry
        self._metrics.probe_started()
        changes: list[StateChange] = []
        try:
            # Python work holds the gate; the probe opens it while it waits (monitor.gate).
            with GATE.held():
                # The step-by-step log is for /probe?debug=true and `check`; a daemon
                # keeping it for every target would hold it for nothing.
                results = [
                    replace(r, log=())
                    for r in check(target.spec, trust, clock=self._clock, responder=self._responder)
                ]
                if key in self._targets:
                    changes = self._store.record(key, results)
        finally:
            self._metrics.probe_finished()
        for change in changes:  # logging may block: outside the gate
            self._on_change(change)
        return started

    def _on_event(self, event: Any) -> None:
        if event.code == EVENT_JOB_EXECUTED and isinstance(event.retval, float):
            lag = event.retval - event.scheduled_run_time.timestamp()
            self._metrics.lag.observe(max(lag, 0.0))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._metrics.skipped.labels("overlap").inc()
        elif event.code == EVENT_JOB_MISSED:
            self._metrics.skipped.labels("missed").inc()
        elif event.code == EVENT_JOB_ERROR:
            # check() turns every probe problem into a verdict; reaching here is a bug.
            log.error("probe job %s crashed: %r", event.job_id, event.exception)
