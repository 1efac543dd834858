"""Sharding: every target probed by exactly one replica, and few move when N changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.shard import Shard, owner, parse_shard
from tests.lab import DaemonProcess, free_port

KEYS = [(f"host{i}.example.com", 443, None) for i in range(3000)]


def test_each_target_has_exactly_one_owner_and_shards_are_balanced() -> None:
    for count in (2, 3, 5):
        owners = [[k for k in KEYS if Shard(i, count).owns(k)] for i in range(count)]
        assert sum(len(o) for o in owners) == len(KEYS)
        assert set().union(*map(set, owners)) == set(KEYS)
        for o in owners:  # roughly even: within 15% of a fair share
            assert abs(len(o) - len(KEYS) / count) < 0.15 * len(KEYS) / count


def test_adding_a_replica_moves_only_what_the_new_one_takes() -> None:
    before = {k: owner(k, 3) for k in KEYS}
    after = {k: owner(k, 4) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == 3 for k in moved)  # nothing moves between the old replicas
    assert 0.18 < len(moved) / len(KEYS) < 0.32  # about 1/4


@pytest.mark.parametrize(
    ("text", "shard"),
    [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), ("staple-monitor-1/3", Shard(1, 3))],
)
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected INDEX/COUNT|shard index must be"):
        parse_shard(text)


@pytest.mark.integration
def test_three_replicas_cover_the_config_once(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(24)]  # nobody listens: quick connect_error verdicts
    config = tmp_path / "shared.yaml"
    config.write_text(
        "defaults: {interval: 1h, timeout: 2s}\ntargets:\n"
        + "".join(f"  - {{host: 127.0.0.1, port: {p}}}\n" for p in ports)
    )
    replicas = [DaemonProcess(config, "--shard", f"staple-monitor-{i}/3") for i in range(3)]
    try:
        seen = []
        for d in replicas:
            m = d.wait_for(
                lambda m: (
                    len(m.find("ocsp_staple_state")) == m.value("ocsp_staple_targets_assigned")
                )
            )
            assert m.value("ocsp_staple_targets_configured") == 24
            seen.append({s.labels["target"] for s in m.samples if s.name == "ocsp_staple_state"})
    finally:
        for d in replicas:
            d.stop()
    assert set().union(*seen) == {f"127.0.0.1:{p}" for p in ports}
    assert sum(len(s) for s in seen) == 24  # no target probed twice
    assert all(seen)  # each replica got a share
