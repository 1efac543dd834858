"""`staple-monitor check` as a user runs it: arguments, messages and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.runner import parse_target

SCRIPT = str(Path(sys.executable).with_name("staple-monitor"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 443)),
        ("example.com:8443", ("example.com", 8443)),
        ("127.0.0.1:443", ("127.0.0.1", 443)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::1]", ("::1", 443)),
    ],
)
def test_targets(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com:", "port must be an integer 1-65535, got ''"),
        ("example.com:0", "port must be an integer 1-65535, got '0'"),
        ("example.com:70000", "port must be an integer 1-65535, got '70000'"),
        ("example.com:https", "port must be an integer 1-65535, got 'https'"),
        ("::1", "IPv6 address must be in brackets, like [::1]:443"),
        ("exa mple.com", "contains spaces or control characters"),
        ("a\x00b", "contains spaces or control characters"),
        ("a" * 300, "host name is longer than 253 characters (300)"),
        ("", "expected HOST[:PORT] or [IPv6]:PORT, got ''"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_target(text)


def test_bad_target_exits_unknown_with_a_message() -> None:
    proc = run("check", "example.com:abc")
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr == "staple-monitor check: port must be an integer 1-65535, got 'abc'\n"


def test_bad_duration_exits_unknown_naming_the_option() -> None:
    proc = run("check", "example.com", "--timeout", "ten")
    assert proc.returncode == 3
    assert "argument --timeout: expected a duration like 30s, 5m or 1h30m, got 'ten'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_ca_file_exits_unknown_naming_the_file(tmp_path: Path) -> None:
    proc = run("check", "127.0.0.1:1", "--ca-file", str(tmp_path / "missing.pem"))
    assert proc.returncode == 3
    assert f"--ca-file {tmp_path / 'missing.pem'}: cannot read CA file" in proc.stderr


def test_both_tls_versions_is_a_usage_error() -> None:
    proc = run("check", "example.com", "--tls1.2", "--tls1.3")
    assert proc.returncode == 3
    assert "not allowed with argument" in proc.stderr


def test_unresolvable_host_is_dns_error_unknown() -> None:
    proc = run("check", "bad..name:443", "--json")
    assert proc.returncode == 3
    doc = json.loads(proc.stdout)
    (result,) = doc["results"]
    assert (doc["state"], result["reason"], result["address"]) == ("unknown", "dns_error", None)


def test_help_explains_exit_codes() -> None:
    proc = run("check", "--help")
    assert proc.returncode == 0
    assert "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in proc.stdout
