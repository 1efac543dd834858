"""A short atheris run of tests/fuzz/fuzz_staple.py, so the fuzz target keeps working in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent / "fuzz"


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_staple.py"), "-atheris_runs=3000", str(corpus)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Done 3000 in" in proc.stderr
