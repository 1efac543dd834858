"""The latest results per configured target, with probe counters and state changes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monitor.ocsp import Reason, State
from monitor.runner import Result

# A target's identity: (host, port, server_name), lower-cased.
Key = tuple[str, int, str | None]


@dataclass(frozen=True)
class StateChange:
    """A (target, address) whose state or reason differs from its previous result."""

    target: str
    address: str | None
    old_state: State | None  # None: first result for this address
    old_reason: Reason | None
    new: Result


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the store for one scrape."""

    results: dict[Key, tuple[Result, ...]]
    probes: Counter[tuple[Key, str | None]]
    failures: dict[tuple[Key, str | None], Counter[Reason]]


class Store:
    """Thread-safe; one target's results are replaced as a whole, so a scrape never mixes runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[Key, tuple[Result, ...]] = {}
        self._probes: Counter[tuple[Key, str | None]] = Counter()
        self._failures: dict[tuple[Key, str | None], Counter[Reason]] = {}

    def record(self, key: Key, results: Sequence[Result]) -> list[StateChange]:
        """Replace ``key``'s results; count them; return the state changes."""
        with self._lock:
            previous = {r.address: r for r in self._results.get(key, ())}
            self._results[key] = tuple(results)
            changes = []
            for r in results:
                self._probes[(key, r.address)] += 1
                if r.verdict.state is not State.OK:
                    self._failures.setdefault((key, r.address), Counter())[r.verdict.reason] += 1
                old = previous.get(r.address)
                if old is None or (old.verdict.state, old.verdict.reason) != (
                    r.verdict.state,
                    r.verdict.reason,
                ):
                    changes.append(
                        StateChange(
                            r.target,
                            r.address,
                            old.verdict.state if old else None,
                            old.verdict.reason if old else None,
                            r,
                        )
                    )
            return changes

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget every target not in ``keys`` (removed from the config)."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._results if k not in keep]:
                del self._results[key]
            for ckey in [c for c in self._probes if c[0] not in keep]:
                del self._probes[ckey]
            for fkey in [f for f in self._failures if f[0] not in keep]:
                del self._failures[fkey]

    def snapshot(self) -> Snapshot:
        """A copy to render from without holding the lock."""
        with self._lock:
            return Snapshot(
                dict(self._results),
                self._probes.copy(),
                {k: c.copy() for k, c in self._failures.items()},
            )

    def results(self, key: Key) -> tuple[Result, ...]:
        """The latest results of one target (empty before its first run)."""
        with self._lock:
            return self._results.get(key, ())
