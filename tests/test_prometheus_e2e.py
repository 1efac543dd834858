"""The shipped alerting rules and dashboard against a real Prometheus scraping the real daemon.

Only `for:` is shortened to 0s in the rules Prometheus loads (promtool's unit tests in
deploy/prometheus/rules.test.yml cover the `for` durations); every expression is the shipped one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import Lab
from tests.lab import DaemonProcess, PrometheusServer, free_port
from tests.peers import peer, silent

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[1]
RULES = ROOT / "deploy/prometheus/rules/staple-monitor.rules.yml"
DASHBOARD = ROOT / "grafana/dashboards/staple-monitor.json"

# alert -> lab scenarios (on 127.0.0.1) it must fire for
FIRES_FOR = {
    "OCSPStapleMissing": ["off"],
    "OCSPStapleExpiringSoon": ["expiring"],
    "OCSPStapleExpired": ["expired"],
    "OCSPStapleNotYetValid": ["notyet"],
    "OCSPCertificateRevoked": ["revoked"],
    "OCSPStapleUnknownStatus": ["unknown"],
    "OCSPStapleSignatureInvalid": ["badsig", "delegated_noeku"],
    "OCSPStapleCertIDMismatch": ["wrongid"],
    "OCSPMustStapleWithoutStaple": ["must_off"],
    "OCSPStapleUnusable": ["trylater"],
    "OCSPStapleChainProblem": ["leaf_only"],
    "OCSPRevokedAtResponder": ["ca_revoked"],
    "OCSPResponderDown": ["deadresp"],
}
# deadresp's staple is good: only its responder fails, which is OCSPResponderDown alone.
GOOD = ["good", "live12", "delegated", "noocsp"]


class Stack:
    def __init__(self, lab: Lab, work: Path, silent_port: int) -> None:
        self.lab = lab
        self.closed = free_port()  # a probe target nobody listens on
        self.dead_monitor = free_port()  # a "staple-monitor" Prometheus cannot scrape
        self.silent_port = silent_port
        self.config = work / "daemon.yaml"
        self.write_config()
        self.daemon = DaemonProcess(self.config)
        rules = yaml.safe_load(RULES.read_text())
        for rule in rules["groups"][0]["rules"]:
            rule["for"] = "0s"
        (work / "prom").mkdir()
        (work / "prom" / "rules.yml").write_text(yaml.safe_dump(rules))
        self.prometheus = PrometheusServer(
            work / "prom",
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n"
            "  - job_name: staple-monitor\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.daemon.port}',"
            f" '127.0.0.1:{self.dead_monitor}']}}]\n",
        )

    def write_config(self, broken: bool = False) -> None:
        lab = self.lab
        lines = [
            "defaults: {interval: 2s, timeout: 5s, retry_no_staple: 500ms,"
            f" ca_file: {lab.pki.path('root.pem')}}}",
            "targets:",
        ]
        for name in sorted({s for v in FIRES_FOR.values() for s in v} | set(GOOD)):
            lines.append(
                f"  - {{host: lab.test, port: {lab.ports[name]}, addresses: [127.0.0.1],"
                f' labels: {{scenario: "{name}"}}}}'
            )
        lines += [
            f"  - {{host: lab.test, port: {lab.multi_port}, addresses: [127.0.0.2, 127.0.0.3]}}",
            f"  - {{host: 127.0.0.1, port: {self.closed}}}",
            # The "good" staple is an hour older than the responder's answers: lagging
            # once the threshold is below that.
            f"  - {{host: 127.0.0.1, port: {lab.ports['good']}, staple_lag_warning: 30m}}",
            # Hangs for longer than three intervals: its results go stale.
            f"  - {{host: 127.0.0.1, port: {self.silent_port}, interval: 1s, timeout: 8s}}",
        ]
        if broken:
            lines.append("  - {host: broken.test, port: 0}")
        self.config.write_text("\n".join(lines) + "\n")

    def wait_firing(self, wanted: set[tuple[str, str, str]], timeout: float = 90) -> set[Any]:
        deadline = time.monotonic() + timeout
        while True:
            firing = self.prometheus.firing()
            if wanted <= firing:
                return firing
            if time.monotonic() > deadline:
                raise AssertionError(f"never fired: {sorted(wanted - firing)}")
            time.sleep(1)

    def stop(self) -> None:
        self.prometheus.stop()
        self.daemon.stop()


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with peer(silent) as silent_port:
        s = Stack(lab, tmp_path_factory.mktemp("e2e"), silent_port)
        try:
            yield s
        finally:
            s.stop()


def test_every_alert_fires_for_its_scenario_and_never_for_good_targets(
    lab: Lab, stack: Stack
) -> None:
    def t(name: str) -> str:
        return f"lab.test:{lab.ports[name]}"

    wanted = {(alert, t(name), "127.0.0.1") for alert, names in FIRES_FOR.items() for name in names}
    wanted |= {
        ("OCSPStapleExpired", f"lab.test:{lab.multi_port}", "127.0.0.3"),
        ("OCSPStapleProbeFailing", f"127.0.0.1:{stack.closed}", "127.0.0.1"),
        ("OCSPStapleProbeFailing", f"127.0.0.1:{stack.silent_port}", "127.0.0.1"),
        ("OCSPStapleResultsStale", f"127.0.0.1:{stack.silent_port}", "127.0.0.1"),
        ("StapleMonitorDown", f"127.0.0.1:{stack.dead_monitor}", ""),
        ("OCSPStapleLagging", f"127.0.0.1:{lab.ports['good']}", "127.0.0.1"),
    }
    firing = stack.wait_firing(wanted)
    good = {(t(n), "127.0.0.1") for n in GOOD} | {(f"lab.test:{lab.multi_port}", "127.0.0.2")}
    wrongly = [a for a in firing if (a[1], a[2]) in good]
    assert wrongly == [], wrongly
    # Each bad scenario fires exactly its own alert, nothing else.
    extra = {a for a in firing if a not in wanted and a[0] != "StapleMonitorConfigReloadFailed"}
    assert extra == set(), extra
    assert ("StapleMonitorDown", f"127.0.0.1:{stack.daemon.port}", "") not in firing
    # Annotations are filled in with the target and address.
    alerts = stack.prometheus.api("alerts")["alerts"]  # type: ignore[index]
    revoked = next(a for a in alerts if a["labels"]["alertname"] == "OCSPCertificateRevoked")
    assert revoked["labels"]["severity"] == "critical"
    assert f"{t('revoked')} at 127.0.0.1" in revoked["annotations"]["description"]
    assert revoked["annotations"]["runbook_url"].endswith("runbook.md#ocspcertificaterevoked")


def test_reload_failure_alert_fires_and_resolves(stack: Stack) -> None:
    instance = f"127.0.0.1:{stack.daemon.port}"
    stack.write_config(broken=True)
    assert requests.post(stack.daemon.url + "/-/reload", timeout=30).status_code == 500
    stack.wait_firing({("StapleMonitorConfigReloadFailed", instance, "")}, timeout=30)
    stack.write_config()
    assert requests.post(stack.daemon.url + "/-/reload", timeout=30).status_code == 200
    deadline = time.monotonic() + 30
    while ("StapleMonitorConfigReloadFailed", instance, "") in stack.prometheus.firing():
        assert time.monotonic() < deadline, "reload alert did not resolve"
        time.sleep(1)


def _substitute(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "30s").replace("$__interval", "5s")
    return re.sub(r"\$\{?(target|instance)\}?", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    stack.wait_firing({("OCSPStapleResultsStale", f"127.0.0.1:{stack.silent_port}", "127.0.0.1")})
    result = stack.prometheus.api("query", query=_substitute(expr))
    assert result["result"], f"{title}: {expr} returned nothing"  # type: ignore[index]


def test_dashboard_variables_have_values(stack: Stack) -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = [v for v in board["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in variables} == {"target", "instance"}
    for v in variables:
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", v["definition"]).groups()  # type: ignore[union-attr]
        values = stack.prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert values, v["name"]
    # Every panel query filters by the variables, so the dashboard's selectors work.
    for title, expr in dashboard_queries():
        assert "$target" in expr or "$instance" in expr, title
