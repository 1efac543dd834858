"""The daemon: configuration, scheduler, store and metrics, with reload and probe-on-demand."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, ProcessCollector

from monitor.config import Config, ConfigError, Target, load_config, make_target
from monitor.metrics import DaemonMetrics, ResultsExposition
from monitor.ocsp import State
from monitor.responder import ResponderClient
from monitor.runner import Clock, Result, check, parse_target
from monitor.scheduler import Scheduler
from monitor.shard import Shard
from monitor.store import Key, StateChange, Store
from monitor.trust import Trust

log = logging.getLogger("staple_monitor")


def utc_now() -> datetime:
    return datetime.now(UTC)


class ProbeRefused(Exception):
    """A /probe request that may not run; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProbeOptions:
    """How ``/probe`` behaves."""

    allow_any_target: bool = False
    concurrency: int = 10


class Daemon:
    """Owns the running configuration; everything else reads it through here."""

    def __init__(
        self,
        config_path: str,
        *,
        clock: Clock = utc_now,
        probe_options: ProbeOptions | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock = clock
        self.probe_options = probe_options or ProbeOptions()
        self.shard = shard or Shard()
        self.config = load_config(config_path)  # ConfigError: nothing started
        self.store = Store()
        self.registry = CollectorRegistry()
        self.metrics = DaemonMetrics(
            self.registry,
            lambda: len(self.config.targets),
            lambda: len(self.assigned(self.config)),
            self.shard,
        )
        # One client for the scheduler and /probe: its cache and rate limit are shared.
        self.responder = ResponderClient(self.config.responder)
        self.metrics.watch_responder(self.responder)
        self.results = ResultsExposition(self.store.snapshot, self._targets_by_key)
        ProcessCollector(registry=self.registry)
        self.scheduler = Scheduler(
            self.store,
            self.metrics,
            workers=self.config.workers,
            clock=clock,
            on_change=log_change,
            responder=self.responder,
        )
        self._reload_lock = threading.Lock()
        self._probe_slots = threading.BoundedSemaphore(self.probe_options.concurrency)
        self.metrics.reloaded(True)

    def start(self) -> None:
        self.scheduler.apply(self._jobs(self.config))
        self.scheduler.start()
        log.info("started with %d targets from %s", len(self.config.targets), self.config.source)

    def shutdown(self) -> None:
        """Stop scheduling and wait for running probes (each bounded by its timeout)."""
        self.scheduler.shutdown(wait=True)

    def reload(self) -> tuple[bool, str]:
        """Load the config file again; on any problem keep the running config."""
        with self._reload_lock:
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                self.metrics.reloaded(False)
                log.error("reload rejected, keeping the running configuration:\n%s", exc)
                return False, str(exc)
            if new.workers != self.config.workers:
                log.warning("workers changed to %d: takes effect at restart", new.workers)
            old_names = {t.key for t in self.config.targets}
            new_names = {t.key for t in new.targets}
            self.config = new
            self.responder.settings = new.responder  # the cache survives a reload
            self.store.retain(t.key for t in self.assigned(new))
            self.scheduler.apply(self._jobs(new))
            self.metrics.reloaded(True)
            message = (
                f"reloaded {new.source}: {len(new.targets)} targets"
                f" ({len(new_names - old_names)} added, {len(old_names - new_names)} removed)"
            )
            log.info(message)
            return True, message

    def assigned(self, config: Config) -> list[Target]:
        """The targets this replica probes on schedule (all of them without sharding)."""
        return [t for t in config.targets if self.shard.owns(t.key)]

    def _jobs(self, config: Config) -> dict[Key, tuple[Target, Trust]]:
        return {t.key: (t, config.trust_for(t)) for t in self.assigned(config)}

    def _targets_by_key(self) -> dict[Key, Target]:
        return {t.key: t for t in self.config.targets}

    def find_target(self, target_text: str, server_name: str | None) -> Target:
        """The configured target ``/probe`` asks for, or an ad hoc one when allowed."""
        try:
            host, port = parse_target(target_text, default_port=None)
        except ValueError as exc:
            raise ProbeRefused(400, f"target: {exc}") from None
        if server_name is not None:
            try:
                parse_target(server_name)
            except ValueError as exc:
                raise ProbeRefused(400, f"server_name: {exc}") from None
        config = self.config
        matches = [
            t
            for t in config.targets
            if (t.host.lower(), t.port) == (host.lower(), port)
            and (server_name is None or (t.server_name or t.host).lower() == server_name.lower())
        ]
        if matches:
            return matches[0]
        if not (self.probe_options.allow_any_target or config.probe_allowed(host, port)):
            raise ProbeRefused(
                403,
                f"target {target_text} is neither configured nor matched by probe_allow;"
                " /probe only probes those unless started with --web.probe-any-target",
            )
        return make_target(host, port, server_name, config.defaults)

    def probe(self, target: Target, scrape_timeout: float | None) -> list[Result]:
        """Probe ``target`` now, within the scrape's own timeout when Prometheus gives one."""
        if not self._probe_slots.acquire(blocking=False):
            raise ProbeRefused(
                503, f"too many /probe requests at once (limit {self.probe_options.concurrency})"
            )
        try:
            spec = target.spec
            deadline = None
            if scrape_timeout is not None:
                # Leave half a second to render and send the answer.
                budget = max(scrape_timeout - 0.5, 0.5)
                deadline = time.monotonic() + budget
                spec = replace(spec, timeout=min(spec.timeout, timedelta(seconds=budget)))
            self.metrics.probe_started()
            try:
                return check(spec, self.config.trust_for(target), clock=self.clock,
                             deadline=deadline, responder=self.responder)  # fmt: skip
            finally:
                self.metrics.probe_finished()
        finally:
            self._probe_slots.release()

    def rows(self) -> list[tuple[Target, Result]]:
        """Every latest result with its target, for the status page."""
        snap = self.store.snapshot()
        return [(t, r) for t in self.config.targets for r in snap.results.get(t.key, ())]


def log_change(change: StateChange) -> None:
    """One line per state change of a (target, address), never one per probe."""
    v = change.new.verdict
    old = "none"
    if change.old_state is not None and change.old_reason is not None:
        old = f"{change.old_state.value}/{change.old_reason.value}"
    level = logging.INFO if v.state is State.OK else logging.WARNING
    log.log(
        level,
        "state change %s at %s: %s -> %s/%s: %s",
        change.target,
        change.address or "-",
        old,
        v.state.value,
        v.reason.value,
        v.detail,
        extra={
            "event": "state_change",
            "target": change.target,
            "address": change.address,
            "from": old,
            "state": v.state.value,
            "reason": v.reason.value,
        },
    )
