"""Deployment routes, checked as far as this machine allows (no container engine here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.config import load_config
from monitor.lab.nginx_files import write_files
from tests.lab import free_port, need_binary, stop

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def test_every_yaml_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), *(ROOT / "grafana").rglob("*.yaml")]
    assert len(files) >= 10
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f


def test_compose_file_matches_the_compose_spec() -> None:
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "docker/compose.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compose = yaml.safe_load((DEPLOY / "docker/compose.yaml").read_text())
    assert set(compose["services"]) == {
        "lab-files",
        "nginx",
        "staple-monitor",
        "prometheus",
        "grafana",
    }
    # Relative mounts point at files that exist in this repository.
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / "docker" / source).exists(), source


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "docker/Dockerfile").read_text()
    lines = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert "HEALTHCHECK" in lines
    assert "USER 10001" in text
    assert lines.index("USER") > lines.index(
        "RUN", lines.index("COPY", 5)
    )  # installs as root first
    assert 'ENTRYPOINT ["staple-monitor"]' in text  # so `docker run IMAGE demo` works
    for source in ("pyproject.toml", "README.md", "monitor"):
        assert (ROOT / source).exists()


def test_compose_example_nginx_staples_and_the_monitor_config_is_valid(tmp_path: Path) -> None:
    nginx = need_binary("nginx")
    port = free_port()
    write_files(tmp_path, "127.0.0.1", port, listen="127.0.0.1")
    load_config(tmp_path / "staple-monitor.yaml")
    conf = tmp_path / "nginx.conf"
    if os.geteuid() == 0:
        conf.write_text("user root root;\n" + conf.read_text())
    proc = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        check = subprocess.run(
            [str(BIN / "staple-monitor"), "check", f"127.0.0.1:{port}", "--servername",
             "example.test", "--ca-file", str(tmp_path / "root.pem"), "--retry-delay", "1s"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        stop(proc)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("OCSP STAPLE OK")


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = need_binary("systemd-analyze")
    unit = (DEPLOY / "systemd/staple-monitor.service").read_text()
    for key in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
                "ExecReload=/bin/kill -HUP $MAINPID"):  # fmt: skip
        assert key in unit
    # Verify the very unit, with ExecStart pointing at this checkout's installed script.
    local = tmp_path / "staple-monitor.service"
    local.write_text(unit.replace("/usr/local/bin/staple-monitor", str(BIN / "staple-monitor")))
    proc = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "staple-monitor.service" in line
    ]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert problems == [], problems


@pytest.mark.parametrize(
    "name", ["configmap.yaml", "deployment.yaml", "service.yaml", "sharded/statefulset.yaml"]
)
def test_kubernetes_manifests_match_their_schemas(name: str) -> None:
    proc = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(DEPLOY / "kubernetes" / name)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout


def test_prometheusrule_carries_exactly_the_shipped_rules() -> None:
    rule = yaml.safe_load((DEPLOY / "kubernetes/prometheusrule.yaml").read_text())
    shipped = yaml.safe_load((DEPLOY / "prometheus/rules/staple-monitor.rules.yml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == shipped


def test_kustomization_lists_every_manifest_and_the_configmap_config_loads(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).exists(), resource
    config = yaml.safe_load((DEPLOY / "kubernetes/configmap.yaml").read_text())["data"][
        "config.yaml"
    ]
    (tmp_path / "config.yaml").write_text(config)
    assert len(load_config(tmp_path / "config.yaml").targets) == 1
    monitor = yaml.safe_load((DEPLOY / "kubernetes/servicemonitor.yaml").read_text())
    service = yaml.safe_load((DEPLOY / "kubernetes/service.yaml").read_text())
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_statefulset_shards_by_pod_name() -> None:
    from monitor.shard import parse_shard

    sts = yaml.safe_load((DEPLOY / "kubernetes/sharded/statefulset.yaml").read_text())
    replicas = sts["spec"]["replicas"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    shard_arg = args[args.index("--shard") + 1]
    assert shard_arg == f"$(POD_NAME)/{replicas}"
    # What Kubernetes substitutes for each pod parses to its own shard.
    shards = {
        parse_shard(shard_arg.replace("$(POD_NAME)", f"staple-monitor-{i}"))
        for i in range(replicas)
    }
    assert {s.index for s in shards} == set(range(replicas))
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/sharded/kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes/sharded" / resource).exists(), resource
