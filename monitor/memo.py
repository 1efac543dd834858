"""A bounded memo for the verdict's costly pure steps.

A fleet sends the same bytes probe after probe: the same chain, the same staple
until the server refreshes it. Verifying the chain to an anchor, reading names and
checking the response's signature give the same answer for the same bytes, so the
verdict remembers them here. Keys are SHA-256 digests of the bytes (a hostile server
cannot make its chain collide with a trusted one) and values hold strings, times and
at most a reference to a trust anchor, never a server's parsed certificates.
Whatever depends on the time is stored with the window in which it holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

DEFAULT_LIMIT = 32768


class Memo:
    """Least-recently-used mapping of at most ``limit`` entries; thread-safe."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        """The value stored for ``key``, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
