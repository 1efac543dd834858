"""Configuration loading: the good file, and every bad file pinned to its exact messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import MAX_FILE_BYTES, ConfigError, load_config
from monitor.probe import TLSVersion
from monitor.responder import Method, ResponderSettings

DATA = Path(__file__).parent / "testdata"
TARGET_KEYS = (
    "addresses, ca_file, host, interval, labels, port, responder_check, retry_no_staple,"
    " server_name, skew, staple_lag_warning, timeout, tls_version, warn_within"
)

# file -> the problems reported, in order, each after "<file>: ".
BAD = {
    "bad-yaml-syntax.yaml": ["line 4 column 1: YAML error: did not find expected ',' or ']'"],
    "bad-port.yaml": ['targets[0].port: expected an integer 1-65535, got "abc"'],
    "bad-port-range.yaml": [
        "targets[0].port: expected an integer 1-65535, got 70000",
        "targets[1].port: expected an integer 1-65535, got true",
    ],
    "bad-unknown-key.yaml": [
        "targts: unknown key (expected one of:"
        " defaults, probe_allow, responder, target_files, targets, workers)"
    ],
    "bad-responder.yaml": [
        'defaults.responder_check: expected true or false, got "yes"',
        "responder.cache: unknown key (expected one of: method, min_interval, refresh_fraction,"
        " retry_after_error, timeout)",
        'responder.timeout: must be more than 0, got "0s"',
        'responder.min_interval: expected a duration like 30s, 5m or 1h30m, got "often"',
        "responder.refresh_fraction: expected a number 0-1, got 1.5",
        'responder.method: expected auto, get or post, got "put"',
        'targets[0].staple_lag_warning: expected a duration like 30s, 5m or 1h30m, got "soon"',
    ],
    "bad-target-unknown-key.yaml": [
        f"targets[0].hots: unknown key (expected one of: {TARGET_KEYS})",
        "targets[0]: missing required key host",
    ],
    "bad-duration.yaml": [
        'defaults.interval: expected a duration like 30s, 5m or 1h30m, got "5 minutes"',
        'defaults.timeout: expected units largest first, each once (like 1h30m), got "1m1h"',
        'defaults.warn_within: must be more than 0, got "0s"',
    ],
    "bad-host.yaml": [
        'targets[0].host: expected a host name or IP address, got ""',
        "targets[1]: missing required key host",
        "targets[2].host: not a valid host name or IP address (no brackets, no port):"
        ' "a.example.com:443"',
        'targets[3].host: not a valid host name or IP address (no brackets, no port): "[::1]"',
    ],
    "bad-duplicate-target.yaml": [
        "targets[1]: duplicate target A.example.com:443 (server_name -); first defined at"
        " {file}: targets[0]"
    ],
    "bad-duplicate-key.yaml": ["line 4 column 5: YAML error: duplicate key 'port'"],
    "bad-labels.yaml": [
        "targets[0].labels.target: reserved label name (the exporter sets it)",
        "targets[0].labels.bad-name: not a valid Prometheus label name"
        " ([a-zA-Z_][a-zA-Z0-9_]*, no __ prefix)",
        "targets[0].labels.__meta: not a valid Prometheus label name"
        " ([a-zA-Z_][a-zA-Z0-9_]*, no __ prefix)",
        "targets[0].labels.ok: expected a string, got a list",
    ],
    "bad-addresses.yaml": [
        'defaults.addresses: expected all, ipv4 or ipv6, got "ipv5"',
        'targets[0].addresses[0]: expected an IP address, got "not-an-ip"',
    ],
    "bad-tls-version.yaml": ['defaults.tls_version: expected any, tls1.2 or tls1.3, got "tls1.1"'],
    "bad-ca-file.yaml": [
        "defaults.ca_file: {dir}/does-not-exist.pem: cannot read CA file: No such file or directory"
    ],
    "bad-not-mapping.yaml": ["expected a mapping, got a list"],
    "bad-workers.yaml": [
        "workers: expected an integer 1-4096, got 0",
        'target_files: expected a list of file patterns, got "targets.d/*.yaml"',
    ],
    "bad-many.yaml": [
        'defaults.interval: expected a duration like 30s, 5m or 1h30m, got "1x"',
        f"targets[0].colour: unknown key (expected one of: {TARGET_KEYS})",
        'targets[0].port: expected an integer 1-65535, got "abc"',
        'targets[1].timeout: expected a duration like 30s, 5m or 1h30m, got "soon"',
    ],
    "bad-non-utf8.yaml": ["not UTF-8 text (byte 22: invalid continuation byte)"],
}


@pytest.mark.parametrize(("name", "expected"), BAD.items(), ids=list(BAD))
def test_bad_config_is_rejected_with_every_problem(name: str, expected: list[str]) -> None:
    path = DATA / name
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    wanted = [f"{path}: " + e.format(file=path, dir=DATA) for e in expected]
    assert exc.value.problems == wanted


def test_every_bad_file_is_pinned() -> None:
    assert {p.name for p in DATA.glob("bad-*.yaml")} == set(BAD) | {"bad-target-files.yaml"}


def test_problems_in_target_files_name_that_file() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(DATA / "bad-target-files.yaml")
    broken = DATA / "bad-targets.d" / "broken.yaml"
    assert exc.value.problems == [f"{broken}: targets[1].port: expected an integer 1-65535, got -1"]


def test_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ConfigError, match=r"more than the 16777216 allowed"):
        load_config(big)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file or directory"):
        load_config(tmp_path / "nope.yaml")


def test_good_config_with_defaults_and_target_files() -> None:
    config = load_config(DATA / "good.yaml")
    by_host = {t.host: t for t in config.targets}
    assert list(by_host) == [
        "www.example.com",
        "192.0.2.10",
        "mail.example.com",
        "api.example.com",
    ]
    assert config.workers == 16
    www = by_host["www.example.com"]
    assert (www.interval, www.timeout, www.labels) == (
        timedelta(minutes=1),
        timedelta(seconds=10),
        (("team", "web"),),
    )
    assert www.name == "www.example.com:443"
    intranet = by_host["192.0.2.10"]
    assert (intranet.tls_version, intranet.spec.sni) == (TLSVersion.TLS1_3, "intranet.example.com")
    assert by_host["mail.example.com"].pinned == ("192.0.2.1", "2001:db8::1")
    api = by_host["api.example.com"]
    assert (api.interval, api.labels) == (
        timedelta(hours=1, minutes=30),
        (("team", "api"), ("tier", "1")),
    )
    assert api.retry_no_staple == timedelta(seconds=2)
    # The cross-check: global politeness settings, a switch and a threshold per target.
    assert config.responder == ResponderSettings(
        timeout=timedelta(seconds=3),
        refresh_fraction=0.25,
        min_interval=timedelta(seconds=2),
        retry_after_error=timedelta(minutes=5),
        method=Method.POST,
    )
    assert (www.responder_check, www.staple_lag_warning) == (True, timedelta(hours=6))
    assert intranet.responder_check is False
    assert intranet.spec.responder_check is False


def test_empty_file_is_a_valid_config_with_no_targets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).targets == ()
