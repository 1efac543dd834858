"""The shipped /probe example (deploy/prometheus/prometheus-probe.yml) with two real Prometheus
servers sharding the targets by hashmod: each target is probed by exactly one of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Lab
from tests.lab import DaemonProcess, PrometheusServer, free_port

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[1] / "deploy/prometheus/prometheus-probe.yml"


def shard_config(targets: list[str], exporter: str, shard: int) -> str:
    """The example as shipped, with only addresses, intervals and the SHARD value changed."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == "ocsp-staple-probe")
    job["static_configs"] = [{"targets": targets}]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    relabel = job["relabel_configs"]
    keep = next(r for r in relabel if r.get("action") == "keep")
    keep["regex"] = str(shard)
    relabel[-1]["replacement"] = exporter
    doc["scrape_configs"] = [job]
    doc.pop("rule_files")
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    return yaml.safe_dump(doc)


def test_two_prometheus_servers_split_probe_targets_with_hashmod(lab: Lab, tmp_path: Path) -> None:
    # Real lab servers plus closed ports: enough targets that both shards get some.
    ports = sorted(lab.ports.values())[:8] + [free_port() for _ in range(8)]
    targets = [f"127.0.0.1:{p}" for p in ports]
    config = tmp_path / "daemon.yaml"
    config.write_text(
        f"defaults: {{interval: 1h, timeout: 2s, retry_no_staple: 0,"
        f" ca_file: {lab.pki.path('root.pem')}}}\n"
        'probe_allow: ["127.0.0.1:*"]\ntargets: []\n'
    )
    daemon = DaemonProcess(config)
    servers = []
    try:
        exporter = f"127.0.0.1:{daemon.port}"
        for shard in (0, 1):
            servers.append(
                PrometheusServer(tmp_path / f"prom{shard}", shard_config(targets, exporter, shard))
            )
        seen: list[set[str]] = [set(), set()]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for shard, prom in enumerate(servers):
                data = prom.api("query", query="ocsp_staple_probe_success")
                seen[shard] = {s["metric"]["instance"] for s in data["result"]}  # type: ignore[index]
            if seen[0] | seen[1] == set(targets):
                break
            time.sleep(1)
        assert seen[0] | seen[1] == set(targets), seen
        assert not seen[0] & seen[1], f"probed by both servers: {seen[0] & seen[1]}"
        assert seen[0], seen
        assert seen[1], seen
        # Neither server scraped the other's targets at all: `up` exists only for its own.
        for shard, prom in enumerate(servers):
            up = prom.api("query", query='up{job="ocsp-staple-probe"}')
            assert {s["metric"]["instance"] for s in up["result"]} == seen[shard]  # type: ignore[index]
    finally:
        for prom in servers:
            prom.stop()
        daemon.stop()
