"""The shipped Prometheus files: rules check and unit tests, scrape configs, runbook links."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab import need_binary

ROOT = Path(__file__).parents[1]
PROM = ROOT / "deploy/prometheus"
RULES = PROM / "rules/staple-monitor.rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("promtool"), *args], cwd=PROM, capture_output=True, text=True, check=False
    )


def test_rules_pass_promtool_check() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 18 rules found" in proc.stdout


def test_rule_unit_tests_cover_every_alert_firing_and_not() -> None:
    proc = promtool("test", "rules", "rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = yaml.safe_load((PROM / "rules.test.yml").read_text())["tests"]
    alerts = {r["alert"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    silent = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == alerts
    assert silent == alerts - {"OCSPCertificateRevoked", "OCSPRevokedAtResponder"}  # for: 0m
    # Every firing test also has a healthy series that must stay quiet.
    for t in tests:
        assert len(t["input_series"]) > sum(len(c["exp_alerts"]) for c in t["alert_rule_test"]), t[
            "name"
        ]


@pytest.mark.parametrize("name", ["prometheus-daemon.yml", "prometheus-probe.yml"])
def test_scrape_configs_pass_promtool(name: str) -> None:
    proc = promtool("check", "config", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_is_documented_with_severity_and_runbook() -> None:
    runbook = (ROOT / "docs/runbook.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"], rule["alert"]
        if rule["alert"].startswith("OCSP"):
            assert "{{ $labels.target }}" in notes["description"], rule["alert"]
            assert "{{ $labels.address }}" in notes["description"], rule["alert"]
        anchor = notes["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no '## {anchor}' section in docs/runbook.md"
