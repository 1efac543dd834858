"""`staple-monitor demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.lab import Metrics, free_port


def test_demo_shows_every_scenario_and_stops_cleanly() -> None:
    port = free_port()
    script = Path(sys.executable).with_name("staple-monitor")
    proc = subprocess.Popen(
        [str(script), "demo", "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        expected = {
            "good": ("ok", "ok"),
            "expiring": ("warning", "expiring_soon"),
            "expired": ("critical", "expired"),
            "revoked": ("critical", "revoked"),
            "none": ("warning", "no_staple"),
            "stale": ("critical", "revoked_at_responder"),
        }
        deadline = time.monotonic() + 20
        while True:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                metrics = Metrics(text)
                if len(metrics.find("ocsp_staple_state")) == len(expected):
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "demo produced no results within 20s"
            time.sleep(0.2)
        for scenario, (state, reason) in expected.items():
            assert metrics.find(
                "ocsp_staple_state", scenario=scenario, state=state, reason=reason
            ) == [1], scenario
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=5).text
        assert "revoked" in page
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"status page: http://127.0.0.1:{port}/" in out
    assert "Traceback" not in err
