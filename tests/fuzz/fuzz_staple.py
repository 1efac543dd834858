"""atheris fuzz target for the staple decoder and verdict.

Run:  python tests/fuzz/fuzz_staple.py -atheris_runs=100000   (or -max_total_time=60)
Any exception other than the verdict's documented result is a crash and a bug.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from cryptography.x509.verification import Store

    from monitor.lab import pki
    from monitor.ocsp import Reason, evaluate
    from monitor.probe import Capture
    from monitor.trust import Trust

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ROOT = pki.make_root("fuzz root", NOW)
CA = pki.make_intermediate("fuzz CA", ROOT, NOW)
LEAF = pki.make_leaf(["fuzz.test"], CA, NOW, ocsp_url="http://127.0.0.1:9/")
TRUST = Trust((ROOT.cert,), "fuzz", Store([ROOT.cert]))
SEED = pki.make_response(
    LEAF.cert,
    CA.cert,
    CA,
    this_update=NOW - timedelta(hours=1),
    next_update=NOW + timedelta(days=1),
)


def test_one_input(data: bytes) -> None:
    capture = Capture("127.0.0.1", 443, "fuzz.test", chain=(LEAF.cert, CA.cert), staple=data)
    verdict = evaluate(capture, TRUST, now=NOW)
    if not isinstance(verdict.reason, Reason):
        raise TypeError(verdict)


def main(argv: list[str]) -> None:
    # Seed empty corpus directories with a real response, so mutations start from one.
    for arg in argv[1:]:
        if not arg.startswith("-") and Path(arg).is_dir() and not any(Path(arg).iterdir()):
            (Path(arg) / "good-staple.der").write_bytes(SEED)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
