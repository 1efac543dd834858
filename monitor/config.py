"""The daemon's YAML configuration, checked strictly on load.

Every problem is reported at once, each with its file and YAML path
(``targets[3].port: expected an integer 1-65535, got "abc"``). Defaults are
applied in one place (``_target``). No DNS and no network at load; CA files are
read, since an unreadable one is a configuration error.
"""

from __future__ import annotations

import functools
import glob
import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from monitor.durations import parse_duration
from monitor.ocsp import DEFAULT_LAG_WARNING
from monitor.probe import TLSVersion
from monitor.responder import Method, ResponderSettings
from monitor.runner import CheckSpec
from monitor.trust import Trust, TrustError, load_trust

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_HOST_LENGTH = 253
ADDRESS_FAMILIES = ("all", "ipv4", "ipv6")
# Labels the exporter sets itself; a target's own labels may not reuse them.
RESERVED_LABELS = frozenset(
    {"target", "address", "server_name", "state", "reason", "status", "job", "instance"}
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Defaults:
    """Values a target inherits unless it sets its own."""

    interval: timedelta = timedelta(minutes=5)
    timeout: timedelta = timedelta(seconds=10)
    warn_within: timedelta = timedelta(hours=24)
    skew: timedelta = timedelta(minutes=5)
    retry_no_staple: timedelta = timedelta(seconds=2)
    addresses: str = "all"
    tls_version: TLSVersion = TLSVersion.ANY
    ca_file: str | None = None
    responder_check: bool = True
    staple_lag_warning: timedelta = DEFAULT_LAG_WARNING


@dataclass(frozen=True)
class Target:
    """One configured target, defaults applied."""

    host: str
    port: int
    server_name: str | None
    interval: timedelta
    timeout: timedelta
    warn_within: timedelta
    skew: timedelta
    retry_no_staple: timedelta
    addresses: str  # all | ipv4 | ipv6 (ignored when ``pinned`` is set)
    pinned: tuple[str, ...]
    tls_version: TLSVersion
    ca_file: str | None
    labels: tuple[tuple[str, str], ...] = ()
    responder_check: bool = True
    staple_lag_warning: timedelta = DEFAULT_LAG_WARNING

    @property
    def spec(self) -> CheckSpec:
        """What the runner needs to check this target."""
        return CheckSpec(
            host=self.host,
            port=self.port,
            server_name=self.server_name,
            addresses=self.pinned,
            family=self.addresses,
            tls_version=self.tls_version,
            timeout=self.timeout,
            warn_within=self.warn_within,
            skew=self.skew,
            retry_no_staple=self.retry_no_staple,
            responder_check=self.responder_check,
            lag_warning=self.staple_lag_warning,
        )

    @property
    def name(self) -> str:
        """The ``target`` label: host:port as configured."""
        return self.spec.target

    @property
    def key(self) -> tuple[str, int, str | None]:
        """Identity: two targets with the same key are duplicates."""
        return (self.host.lower(), self.port, (self.server_name or "").lower() or None)


@dataclass(frozen=True)
class Config:
    """A loaded, valid configuration."""

    source: str
    targets: tuple[Target, ...]
    workers: int = 64
    defaults: Defaults = Defaults()
    probe_allow: tuple[str, ...] = ()  # HOST:PORT shell patterns /probe may probe
    responder: ResponderSettings = field(default_factory=ResponderSettings)
    trusts: dict[str | None, Trust] = field(default_factory=dict, compare=False, repr=False)

    def probe_allowed(self, host: str, port: int) -> bool:
        """Whether an unconfigured ``host:port`` matches a ``probe_allow`` pattern."""
        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return any(_pattern(p).fullmatch(name.lower()) for p in self.probe_allow)

    def trust_for(self, target: Target) -> Trust:
        """The trust store a target's chain is verified against."""
        return self.trusts[target.ca_file]


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    # Only * and ? are wildcards: brackets stay literal, for [IPv6]:port.
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


# libyaml's parser when PyYAML has it (its wheels do): the pure-Python one leaves a
# large config's parse garbage behind as resident memory (5.7 KiB per target at 10k).
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _show(value: Any) -> str:
    """A value as the error message quotes it."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


class _Checker:
    """Collects problems for one file; each helper returns a value or None."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[str] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(
            f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}"
        )

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.bad(path, f"expected a mapping, got {_show(value)}")
            return None
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.bad(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def duration(self, value: Any, path: str, *, positive: bool = True) -> timedelta | None:
        if value == 0 and not isinstance(value, bool):
            value = "0"  # YAML reads a bare 0 as an integer
        if not isinstance(value, str):
            self.bad(path, f"expected a duration like 30s, 5m or 1h30m, got {_show(value)}")
            return None
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.bad(path, str(exc).replace(repr(value), _show(value)))
            return None
        if positive and parsed <= timedelta(0):
            self.bad(path, f"must be more than 0, got {_show(value)}")
            return None
        return parsed

    def port(self, value: Any, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.bad(path, f"expected an integer 1-65535, got {_show(value)}")
            return None
        return value

    def host(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.bad(path, f"expected a host name or IP address, got {_show(value)}")
            return None
        if len(value) > MAX_HOST_LENGTH:
            self.bad(path, f"host name is longer than {MAX_HOST_LENGTH} characters")
            return None
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if value.startswith("[") or not _HOST.match(value) or ".." in value:
            self.bad(
                path, f"not a valid host name or IP address (no brackets, no port): {_show(value)}"
            )
            return None
        return value

    def ip(self, value: Any, path: str) -> str | None:
        try:
            return str(ipaddress.ip_address(value)) if isinstance(value, str) else None
        except ValueError:
            pass
        self.bad(path, f"expected an IP address, got {_show(value)}")
        return None


def _defaults(c: _Checker, raw: Any, base: Defaults, path: str) -> Defaults:
    allowed = {"interval", "timeout", "warn_within", "skew", "retry_no_staple", "addresses",
               "tls_version", "ca_file", "responder_check", "staple_lag_warning"}  # fmt: skip
    data = c.mapping(raw, path, allowed)
    if data is None:
        return base
    values: dict[str, Any] = {}
    for key in ("interval", "timeout", "warn_within", "skew", "staple_lag_warning"):
        if key in data:
            values[key] = c.duration(data[key], f"{path}.{key}")
    if "responder_check" in data:
        if isinstance(data["responder_check"], bool):
            values["responder_check"] = data["responder_check"]
        else:
            c.bad(
                f"{path}.responder_check",
                f"expected true or false, got {_show(data['responder_check'])}",
            )
    if "retry_no_staple" in data:
        values["retry_no_staple"] = c.duration(
            data["retry_no_staple"], f"{path}.retry_no_staple", positive=False
        )
    if "addresses" in data and (
        not isinstance(data["addresses"], str) or data["addresses"] not in ADDRESS_FAMILIES
    ):
        c.bad(f"{path}.addresses", f"expected all, ipv4 or ipv6, got {_show(data['addresses'])}")
    elif "addresses" in data:
        values["addresses"] = data["addresses"]
    if "tls_version" in data:
        try:
            values["tls_version"] = TLSVersion(str(data["tls_version"]))
        except ValueError:
            c.bad(
                f"{path}.tls_version",
                f"expected any, tls1.2 or tls1.3, got {_show(data['tls_version'])}",
            )
    if "ca_file" in data:
        ca = data["ca_file"]
        if ca is not None and (not isinstance(ca, str) or not ca):
            c.bad(f"{path}.ca_file", f"expected a file path or null, got {_show(ca)}")
        else:
            values["ca_file"] = ca
    kept = {k: v for k, v in values.items() if v is not None or k == "ca_file"}
    return Defaults(**{**base.__dict__, **kept})


def _responder(c: _Checker, raw: Any) -> ResponderSettings:
    path = "responder"
    data = c.mapping(
        raw, path, {"timeout", "refresh_fraction", "min_interval", "retry_after_error", "method"}
    )
    if data is None:
        return ResponderSettings()
    values: dict[str, Any] = {}
    for key in ("timeout", "min_interval", "retry_after_error"):
        if key in data:
            values[key] = c.duration(data[key], f"{path}.{key}", positive=key == "timeout")
    if "refresh_fraction" in data:
        fraction = data["refresh_fraction"]
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (0 <= fraction <= 1)
        ):
            c.bad(f"{path}.refresh_fraction", f"expected a number 0-1, got {_show(fraction)}")
        else:
            values["refresh_fraction"] = float(fraction)
    if "method" in data:
        try:
            values["method"] = Method(str(data["method"]))
        except ValueError:
            c.bad(f"{path}.method", f"expected auto, get or post, got {_show(data['method'])}")
    return ResponderSettings(**{k: v for k, v in values.items() if v is not None})


_TARGET_KEYS = {"host", "port", "server_name", "interval", "timeout", "warn_within", "skew",
                "retry_no_staple", "addresses", "tls_version", "ca_file", "labels",
                "responder_check", "staple_lag_warning"}  # fmt: skip


def _target(
    c: _Checker, raw: Any, path: str, defaults: Defaults, config_dir: Path
) -> Target | None:
    data = c.mapping(raw, path, _TARGET_KEYS)
    if data is None:
        return None
    before = len(c.problems)
    if "host" not in data:
        c.bad(path, "missing required key host")
    host = c.host(data.get("host"), f"{path}.host") if "host" in data else None
    port = c.port(data["port"], f"{path}.port") if "port" in data else 443
    server_name = data.get("server_name")
    if server_name is not None:
        server_name = c.host(server_name, f"{path}.server_name")
    # Per-target settings override defaults: the same rules, in one place.
    own = {
        k: data[k] for k in _TARGET_KEYS - {"host", "port", "server_name", "labels"} if k in data
    }
    pinned: tuple[str, ...] = ()
    addresses = own.get("addresses")
    if isinstance(addresses, list):
        del own["addresses"]
        if not addresses:
            c.bad(f"{path}.addresses", "expected all, ipv4, ipv6 or a non-empty list of IPs")
        ips = [c.ip(a, f"{path}.addresses[{i}]") for i, a in enumerate(addresses)]
        pinned = tuple(ip for ip in ips if ip)
    settings = _defaults(c, own, defaults, path) if own else defaults
    labels = _labels(c, data.get("labels", {}), f"{path}.labels")
    if len(c.problems) > before or host is None or port is None:
        return None
    if settings.ca_file is not None and not Path(settings.ca_file).is_absolute():
        settings = replace(settings, ca_file=str(config_dir / settings.ca_file))
    return make_target(host, port, server_name, settings, pinned=pinned, labels=labels)


def _labels(c: _Checker, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        c.bad(path, f"expected a mapping of label names to strings, got {_show(raw)}")
        return ()
    out = []
    for name, value in raw.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
            c.bad(where, "not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no __ prefix)")
        elif name in RESERVED_LABELS:
            c.bad(where, "reserved label name (the exporter sets it)")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            c.bad(where, f"expected a string, got {_show(value)}")
        else:
            out.append((name, str(value)))
    return tuple(sorted(out))


def _read_yaml(path: Path, shown: str, problems: list[str]) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(
                f"{shown}: file is {size} bytes, more than the {MAX_FILE_BYTES} allowed"
            )
            return None
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        problems.append(f"{shown}: cannot read: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{shown}: not UTF-8 text (byte {exc.start}: {exc.reason})")
        return None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problems.append(f"{shown}: {where}YAML error: {exc.problem}")
    except yaml.YAMLError as exc:
        problems.append(f"{shown}: YAML error: {exc}")
    return None


def load_config(path: str | Path) -> Config:
    """Load and check ``path`` (and its target_files); raise ConfigError listing every problem."""
    path = Path(path)
    shown = str(path)
    problems: list[str] = []
    raw = _read_yaml(path, shown, problems)
    if problems:
        raise ConfigError(problems)
    if raw is None:
        raw = {}
    c = _Checker(shown)
    data = c.mapping(
        raw, "", {"defaults", "targets", "target_files", "workers", "probe_allow", "responder"}
    )
    if data is None:
        raise ConfigError(c.problems)
    defaults = (
        _defaults(c, data["defaults"], Defaults(), "defaults") if "defaults" in data else Defaults()
    )
    responder = _responder(c, data["responder"]) if "responder" in data else ResponderSettings()
    workers = data.get("workers", 64)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
        c.bad("workers", f"expected an integer 1-4096, got {_show(workers)}")
    probe_allow = data.get("probe_allow", [])
    if not isinstance(probe_allow, list):
        c.bad("probe_allow", f"expected a list of HOST:PORT patterns, got {_show(probe_allow)}")
        probe_allow = []
    for i, pattern in enumerate(probe_allow):
        if not isinstance(pattern, str) or ":" not in pattern or not pattern.rsplit(":", 1)[1]:
            c.bad(f"probe_allow[{i}]", f"expected a HOST:PORT pattern like *.example.com:443,"
                  f" got {_show(pattern)}")  # fmt: skip
    base_dir = path.parent
    targets: list[tuple[Target, str]] = []
    targets += _target_list(c, data.get("targets", []), "targets", defaults, base_dir)
    files = data.get("target_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        c.bad("target_files", f"expected a list of file patterns, got {_show(files)}")
        files = []
    for pattern in files:
        full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
        for match in sorted(glob.glob(full)):
            sub = _Checker(match)
            raw_sub = _read_yaml(Path(match), match, sub.problems)
            if raw_sub is not None:
                sub_data = sub.mapping(raw_sub, "", {"targets"})
                if sub_data is not None:
                    targets += _target_list(
                        sub, sub_data.get("targets", []), "targets", defaults, base_dir
                    )
            c.problems += sub.problems
    seen: dict[tuple[str, int, str | None], str] = {}
    for target, where in targets:
        if target.key in seen:
            c.problems.append(
                f"{where}: duplicate target {target.name} (server_name"
                f" {target.server_name or '-'}); first defined at {seen[target.key]}"
            )
        else:
            seen[target.key] = where
    # Each distinct CA file is read once, here, never per probe.
    trusts: dict[str | None, Trust] = {}
    failed: set[str | None] = set()
    if defaults.ca_file is not None and not Path(defaults.ca_file).is_absolute():
        defaults = replace(defaults, ca_file=str(base_dir / defaults.ca_file))
    try:
        trusts[defaults.ca_file] = load_trust(defaults.ca_file)
    except TrustError as exc:
        failed.add(defaults.ca_file)
        c.bad("defaults.ca_file", str(exc))
    for target, where in targets:
        if target.ca_file in trusts or target.ca_file in failed:
            continue
        try:
            trusts[target.ca_file] = load_trust(target.ca_file)
        except TrustError as exc:
            failed.add(target.ca_file)
            c.problems.append(f"{where}.ca_file: {exc}")
    if c.problems:
        raise ConfigError(c.problems)
    return Config(
        source=shown,
        targets=tuple(t for t, _ in targets),
        workers=workers,
        defaults=defaults,
        probe_allow=tuple(p.lower() for p in probe_allow),
        responder=responder,
        trusts=trusts,
    )


def _target_list(
    c: _Checker, raw: Any, path: str, defaults: Defaults, config_dir: Path
) -> list[tuple[Target, str]]:
    if not isinstance(raw, list):
        c.bad(path, f"expected a list of targets, got {_show(raw)}")
        return []
    out = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        target = _target(c, item, where, defaults, config_dir)
        if target is not None:
            out.append((target, f"{c.file}: {where}"))
    return out


def make_target(
    host: str,
    port: int,
    server_name: str | None,
    defaults: Defaults,
    *,
    pinned: tuple[str, ...] = (),
    labels: tuple[tuple[str, str], ...] = (),
) -> Target:
    """A target with ``defaults`` applied: from the configuration, or ad hoc for ``/probe``."""
    return Target(
        host=host,
        port=port,
        server_name=server_name,
        interval=defaults.interval,
        timeout=defaults.timeout,
        warn_within=defaults.warn_within,
        skew=defaults.skew,
        retry_no_staple=defaults.retry_no_staple,
        addresses=defaults.addresses,
        pinned=pinned,
        tls_version=defaults.tls_version,
        ca_file=defaults.ca_file,
        labels=labels,
        responder_check=defaults.responder_check,
        staple_lag_warning=defaults.staple_lag_warning,
    )
