"""Sharding: which of N replicas probes a target.

Rendezvous (highest random weight) hashing: every replica computes, for every
target, a hash of (target, replica index) and the replica with the highest value
owns it. The choice is stable across restarts and machines, every target has
exactly one owner, and going from N to N+1 replicas moves only the ~1/(N+1) of the
targets that the new replica wins; none move between the old replicas.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD = re.compile(r"^(?:.+-)?(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """This replica's index and the number of replicas."""

    index: int = 0
    count: int = 1

    def owns(self, key: object) -> bool:
        """Whether this replica probes the target with identity ``key``."""
        return self.count == 1 or owner(key, self.count) == self.index


def owner(key: object, count: int) -> int:
    """The replica (0 .. count-1) that owns ``key``."""
    text = repr(key).encode()
    return max(
        range(count),
        key=lambda i: hashlib.blake2b(b"%d|%s" % (i, text), digest_size=8).digest(),
    )


def parse_shard(text: str) -> Shard:
    """``I/N``; ``I`` may end a name (``staple-monitor-2/3``, a StatefulSet pod's name)."""
    m = _SHARD.match(text.strip())
    if not m:
        raise ValueError(f"expected INDEX/COUNT like 0/3 (or POD-NAME-2/3), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be 0..{count - 1} and count at least 1, got {text!r}")
    return Shard(index, count)
