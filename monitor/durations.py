"""Durations as operators write them: ``500ms``, ``30s``, ``5m``, ``1h30m``, ``7d``."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

# Largest first: a duration must name its units in this order.
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` or raise ValueError with a message that shows the expected form.

    Units must be given, largest first, each once (Prometheus' duration syntax);
    a bare ``0`` is accepted.
    """
    text = text.strip()
    if text == "0":
        return timedelta(0)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"expected a duration like 30s, 5m or 1h30m, got {text!r}")
    parts = _PART.findall(text)
    order = [list(_UNITS).index(unit) for _, unit in parts]
    if any(a >= b for a, b in itertools.pairwise(order)):
        raise ValueError(f"expected units largest first, each once (like 1h30m), got {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration for whole seconds: ``1h30m``, ``2d``, ``0s``."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out.append(f"{total // size}{unit}")
            total %= size
    return "".join(out)


def humanize(delta: timedelta) -> str:
    """A relative time for reports: ``in 3d 4h`` or ``2h ago`` (two largest units)."""
    seconds = int(delta.total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    text = " ".join(parts)
    return f"in {text}" if future else f"{text} ago"
