"""Rendering results for people (text) and for programs (JSON, schema in docs/check-json.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitor.durations import humanize
from monitor.ocsp import State
from monitor.runner import Result

JSON_SCHEMA = "staple-monitor/check/v1"


def worst_state(results: Sequence[Result]) -> State:
    """The worst state among ``results`` (critical > warning > unknown > ok)."""
    return max((r.verdict.state for r in results), key=lambda s: s.severity, default=State.UNKNOWN)


def result_dict(result: Result) -> dict[str, Any]:
    """One result as a JSON-ready mapping: where, how, then every verdict field."""
    out: dict[str, Any] = {
        "target": result.target,
        "address": result.address,
        "server_name": result.server_name,
        "started_at": result.started_at.isoformat(),
        "duration_seconds": round(result.duration_seconds, 6),
        "retried": result.retried,
        "protocol": result.protocol,
        "cipher": result.cipher,
        "connect_seconds": result.connect_seconds,
        "handshake_seconds": result.handshake_seconds,
    }
    out.update(result.verdict.as_dict())
    out["responder"] = result.responder.as_dict() if result.responder is not None else None
    return out


def render_json(target: str, results: Sequence[Result]) -> str:
    """The ``check --json`` document."""
    state = worst_state(results)
    doc = {
        "schema": JSON_SCHEMA,
        "target": target,
        "state": state.value,
        "exit_code": state.exit_code,
        "results": [result_dict(r) for r in results],
    }
    return json.dumps(doc, indent=2)


def _when(value: datetime | None, now: datetime) -> str | None:
    if value is None:
        return None
    return f"{value.isoformat()} ({humanize(value - now)})"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> str | None:
    return None if value is None else (yes if value else no)


def _responder_rows(r: Result, now: datetime) -> list[tuple[str, str | None]]:
    """The CA responder's answer, beside the staple's."""
    view = r.responder
    if view is None:
        return []
    q = view.latest
    if q is None:
        return [("responder", "not asked yet: its rate limit allowed no query")]
    how = "cached" if view.cached else "asked now"
    asked = f"{q.method.upper()} {q.url}, {how}, {_ms(q.latency_seconds)}"
    if q.http_status is not None:
        asked += f", HTTP {q.http_status}"
    rows: list[tuple[str, str | None]] = [("responder", asked)]
    if q.error is not None:
        rows.append(("  answer", f"UNUSABLE ({q.error.value}): {q.error_detail}"))
    kept = view.good
    good = kept.verdict if kept is not None else None
    if kept is not None and good is not None:
        if kept is not q:
            rows.append(("  kept answer", f"from {kept.asked_at.isoformat()} (still valid)"))
        status = good.cert_status.value if good.cert_status else "-"
        if good.revocation_time is not None:
            status += f", revoked {_when(good.revocation_time, now)}"
        rows += [
            ("  cert status", status),
            ("  thisUpdate", _when(good.this_update, now)),
            ("  nextUpdate", _when(good.next_update, now)),
            ("  signed by", good.signer_subject),
        ]
    if r.verdict.staple_lag_seconds is not None:
        rows.append(("  staple lag", f"{r.verdict.staple_lag_seconds:.0f}s behind the responder"))
    return rows


def render_text(target: str, results: Sequence[Result], now: datetime) -> str:
    """A readable report; the first line is the Nagios status line."""
    state = worst_state(results)
    summary = "; ".join(f"{r.address or '-'} {r.verdict.reason.value}" for r in results)
    lines = [f"OCSP STAPLE {state.value.upper()} - {target}: {summary}"]
    for r in results:
        v = r.verdict
        signer = None
        if v.signer is not None:
            signer = f"{v.signer.value} {v.signer_subject}"
            signer += (
                f" (signature {_yes_no(v.signature_valid, 'valid', 'INVALID') or 'not checked'})"
            )
        revoked = _when(v.revocation_time, now)
        if revoked and v.revocation_reason:
            revoked += f", reason {v.revocation_reason}"
        rows: list[tuple[str, str | None]] = [
            ("state", f"{v.state.value.upper()} ({v.reason.value})"),
            ("detail", v.detail),
            (
                "staple",
                None
                if v.staple_present is None
                else (
                    f"{v.staple_bytes} bytes, {v.response_status}" if v.staple_present else "none"
                ),
            ),
            ("cert status", v.cert_status.value if v.cert_status else None),
            ("revoked", revoked),
            ("thisUpdate", _when(v.this_update, now)),
            ("nextUpdate", _when(v.next_update, now)),
            ("producedAt", _when(v.produced_at, now)),
            ("signed by", signer),
            ("responder id", v.responder_id),
            ("certificate", v.leaf_subject and f"{v.leaf_subject}, serial {v.leaf_serial}"),
            ("not after", _when(v.leaf_not_after, now)),
            ("issuer", v.issuer_subject),
            ("OCSP URLs", ", ".join(v.ocsp_urls) if v.leaf_subject else None),
            ("Must-Staple", _yes_no(v.must_staple)),
            ("chain", _yes_no(v.chain_trusted, "trusted", "NOT trusted")),
            ("TLS", r.protocol and f"{r.protocol} {r.cipher}"),
            (
                "timings",
                f"connect {_ms(r.connect_seconds)}, handshake {_ms(r.handshake_seconds)},"
                f" total {_ms(r.duration_seconds)}",
            ),
            ("retried", "yes (the first handshake brought no staple)" if r.retried else None),
            *_responder_rows(r, now),
        ]
        lines.append("")
        lines.append(f"{r.target} at {r.address or '-'} (SNI {r.server_name or '-'})")
        lines.extend(f"  {k:<13} {val}" for k, val in rows if val)
    return "\n".join(lines) + "\n"
