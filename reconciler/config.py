"""config.toml -> a typed, validated, frozen Config.

Everything is checked up front and every problem is reported at once, each
naming the file, the key and what was expected, so the daemon never starts
half-configured and an operator fixes a config in one pass.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from reconciler.errors import ConfigError
from reconciler.model import Mode
from reconciler.pruneguard import DEFAULT_PRUNE_FLOOR
from reconciler.secretfile import exposed
from reconciler.urls import normalise_server, normalise_url
from reconciler.waves import DEFAULT_HOOK_TIMEOUT_S, DEFAULT_WAVE_TIMEOUT_S

DEFAULT_STATE_DIR = "/var/lib/reconciler"
DEFAULT_REF = "refs/remotes/origin/main"
# What a cluster's follow-up reconcile waits after the previous one ended (the default
# of daemon.debounce_s): a stream of watch events (a controller writing status) then
# makes one reconcile per gap at most, never back-to-back ones.
FOLLOW_UP_GAP_S = 0.05
# Server-side dry-runs a diff sends at once to one cluster (daemon.dry_run_concurrency).
# Where the API servers share the daemon's CPUs (the 2-core test machine) more than one
# did not help (bench/bench_reconcile.py --only cold-start); 4 overlaps a remote server's
# round trips while taking few of its seats. The ceiling bounds connections and seats.
DEFAULT_DRY_RUN_CONCURRENCY = 4
MAX_DRY_RUN_CONCURRENCY = 64
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62})$", re.IGNORECASE)
_T = TypeVar("_T")


@dataclass(frozen=True)
class RepoConfig:
    name: str
    path: Path
    url: str | None
    ref: str
    apps: tuple[str, ...]


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    mode: Mode
    argocd: bool
    kubeconfig: Path
    context: str | None
    servers: tuple[str, ...]
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None


@dataclass(frozen=True)
class AppConfig:
    """An app declared in config rather than by an Argo CD Application."""

    name: str
    repo: str
    path: str
    cluster: str
    namespace: str


@dataclass(frozen=True)
class ChartCredential:
    """Credentials for chart repositories and OCI registries whose URL starts with `url`;
    the password is read from `password_file` when a chart is fetched, never kept here."""

    url: str
    username: str
    password_file: Path


@dataclass(frozen=True)
class RenderConfig:
    timeout_seconds: float = 120.0
    max_file_bytes: int = 8 * 1024 * 1024  # real CRD bundles reach a few MiB
    helm: str | None = None
    kubectl: str | None = None
    # Chart repository URL (as Applications name it) -> URL to pull from instead,
    # for air-gapped hosts and for tests serving charts locally.
    chart_mirrors: Mapping[str, str] = field(default_factory=dict)
    # Hosts that Helm `valueFiles` URLs and kustomize remote resources may name; a
    # commit can otherwise make the management host call any address.
    allow_remote: tuple[str, ...] = ()
    # CA certificates trusted for chart pulls (HTTP and OCI) besides the system's.
    chart_ca_file: Path | None = None
    # [[render.chart_credentials]]: the longest matching URL prefix wins.
    chart_credentials: tuple[ChartCredential, ...] = ()
    # Bounds on what one app may make (output of a tool run, objects) and on the
    # sandboxed tool process (address space, CPU seconds).
    max_output_bytes: int = 64 * 1024 * 1024
    max_objects: int = 10_000
    memory_limit_bytes: int = 4 * 1024 * 1024 * 1024
    cpu_seconds: int = 300
    # How many generations of Applications rendered by apps (app-of-apps) are read.
    max_app_depth: int = 3
    # Options for every kustomize build, as Argo CD's `kustomize.buildOptions`; only
    # KUSTOMIZE_BUILD_OPTIONS are accepted (the others run code or reach out).
    kustomize_build_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class DaemonConfig:
    """How the daemon runs: where its policies are, how often it looks, what it keeps."""

    policies: Path | None = None  # None: the policies shipped with the reconciler
    metrics_address: str | None = "127.0.0.1:9108"
    resync_interval_s: float = 300.0
    fetch_interval_s: float = 60.0
    # The least time from the end of one reconcile of a cluster to the start of the
    # next; a trigger on an idle worker never waits (reconciler.daemon.Worker).
    debounce_s: float = FOLLOW_UP_GAP_S
    retention_days: float = 14.0
    max_prune_share: float = 0.5
    # A prune of at most this many objects is never held by the share guard.
    prune_floor: int = DEFAULT_PRUNE_FLOOR
    # How long an app's sync waits for a wave to become healthy, and for a hook to complete.
    wave_timeout_s: float = DEFAULT_WAVE_TIMEOUT_S
    hook_timeout_s: float = DEFAULT_HOOK_TIMEOUT_S
    # How many server-side dry-runs a diff sends at once to one cluster; fewer while
    # the server throttles (reconciler.dryruns).
    dry_run_concurrency: int = DEFAULT_DRY_RUN_CONCURRENCY


@dataclass(frozen=True)
class LogsConfig:
    level: str = "info"
    ship_url: str | None = None  # VictoriaLogs base URL on the monitoring cluster
    ship_ca_file: Path | None = None


@dataclass(frozen=True)
class MatrixConfig:
    """[notify.matrix]: the homelab's Matrix room, where notices go and approvals come from.
    The access token stays in `token_file` (read when the notifier starts, kept nowhere)."""

    homeserver: str
    room_id: str
    token_file: Path
    approvers: tuple[str, ...] = ()
    ca_file: Path | None = None
    approval_ttl_s: float = 3600.0
    # Notices within this window go out as one message.
    batch_s: float = 2.0
    max_per_minute: int = 6
    # Pending notices kept (in the store) while the homeserver is away; past it the
    # oldest of the least important go, counted.
    queue_size: int = 1000


@dataclass(frozen=True)
class NotifyConfig:
    """[notify]: where notices go; None for a channel not configured (nothing started)."""

    matrix: MatrixConfig | None = None


@dataclass(frozen=True)
class Config:
    file: Path
    state_dir: Path
    render: RenderConfig
    repos: tuple[RepoConfig, ...]
    clusters: tuple[ClusterConfig, ...]
    apps: tuple[AppConfig, ...]
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    def cluster(self, name: str) -> ClusterConfig | None:
        return next((c for c in self.clusters if c.name == name), None)


def with_policy_modes(config: Config, report_only: Callable[[ClusterConfig], bool]) -> Config:
    """`config` with each cluster's effective mode: "report" too where the policies
    force it (`report_only`). Resolved once, when config and policies are loaded, so
    every part reads `cluster.mode` and none works it out again; policies can only
    add report-only clusters, never turn one to apply."""
    clusters = tuple(
        replace(c, mode="report") if c.mode == "apply" and report_only(c) else c
        for c in config.clusters
    )
    return replace(config, clusters=clusters)


class _Reader:
    """Collects problems while reading tables, so validation never stops early."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.problems: list[str] = []

    def problem(self, key: str, expected: str) -> None:
        self.problems.append(f"{self.file}: {key}: {expected}")

    def table(self, data: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, "expected a table")
            return {}
        self._unknown_keys(value, key, allowed)
        return value

    def tables(self, data: Mapping[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem(key, f"expected an array of tables ([[{key}]])")
            return []
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]

    def _unknown_keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in sorted(set(table) - allowed):
            self.problem(f"{prefix}.{key}", f"unknown key; expected one of {sorted(allowed)}")

    def check_keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        self._unknown_keys(table, prefix, allowed)

    def get(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        convert: Callable[[Any], _T | None],
        expected: str,
        default: _T | None = None,
        required: bool = False,
    ) -> _T | None:
        if key not in table:
            if required:
                self.problem(f"{prefix}.{key}", f"missing; expected {expected}")
            return default
        value = convert(table[key])
        if value is None:
            self.problem(f"{prefix}.{key}", f"expected {expected}, got {_describe(table[key])}")
            return default
        return value

    def path(self, value: str) -> Path:
        return (self.file.parent / Path(value).expanduser()).resolve()


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else "a long string"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and _NAME.match(value) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _mode(value: Any) -> Mode | None:
    if value == "apply":
        return "apply"
    if value == "report":
        return "report"
    return None


def _positive_int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def _positive_number(value: Any) -> float | None:
    return float(value) if _number(value) and value > 0 else None


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(_str(v) for v in value):
        return tuple(value)
    return None


def _ref(value: Any) -> str | None:
    ok = isinstance(value, str) and (value == "HEAD" or value.startswith("refs/"))
    return value if ok else None


def _server(value: Any) -> str | None:
    ok = isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None
    return value if ok else None


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        return None


def load_config(file: Path) -> Config:
    """Read and validate `file`; raises ConfigError listing every problem."""
    file = file.resolve()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return parse_config(data, file)


def parse_config(data: Mapping[str, Any], file: Path) -> Config:
    r = _Reader(file)
    r.check_keys(
        data, "(top level)", {"daemon", "render", "repos", "clusters", "apps", "logs", "notify"}
    )

    daemon_keys = {"state_dir", *DaemonConfig.__dataclass_fields__}
    daemon = r.table(data, "daemon", daemon_keys)
    state_dir = r.get(daemon, "daemon", "state_dir", _str, "a directory path", DEFAULT_STATE_DIR)
    # Every table is read before deciding, so one run of `check` lists every problem.
    daemon_config = _daemon(r, daemon)
    logs = _logs(r, data)
    render = _render(r, data)
    repos = _repos(r, data)
    clusters = _clusters(r, data)
    apps = _apps(r, data, {x.name for x in repos}, {c.name for c in clusters})
    notify = _notify(r, data)

    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        file=file,
        state_dir=r.path(state_dir or DEFAULT_STATE_DIR),
        render=render,
        repos=tuple(repos),
        clusters=tuple(clusters),
        apps=tuple(apps),
        daemon=daemon_config,
        logs=logs,
        notify=notify,
    )


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names and the process must read at start-up
    (kubeconfigs, the log CA, policies, tool binaries), each naming file and key.
    Kept apart from parsing, which stays a pure function of the text."""
    problems: list[str] = []

    def need(path: Path | None, key: str, what: str, test: Callable[[Path], bool]) -> None:
        if path is not None and not test(path):
            problems.append(f"{config.file}: {key}: {path}: expected {what}")

    for i, cluster in enumerate(config.clusters):
        need(cluster.kubeconfig, f"clusters[{i}].kubeconfig", "a readable kubeconfig file", _file)
    need(config.logs.ship_ca_file, "logs.ship_ca_file", "a readable CA certificate file", _file)
    ca = config.render.chart_ca_file
    need(ca, "render.chart_ca_file", "a readable file of PEM CA certificates", _pem_file)

    def private(path: Path, key: str, what: str) -> None:
        need(path, key, what, _file)
        why = _exposed(path)
        if why is not None:
            problems.append(f"{config.file}: {key}: {path}: {why}")

    for i, credential in enumerate(config.render.chart_credentials):
        key = f"render.chart_credentials[{i}].password_file"
        private(credential.password_file, key, "a readable file")
    matrix = config.notify.matrix
    if matrix is not None:
        key = "notify.matrix.token_file"
        private(matrix.token_file, key, "a readable file holding the access token")
        need(
            matrix.ca_file,
            "notify.matrix.ca_file",
            "a readable file of PEM CA certificates",
            _pem_file,
        )
    need(config.daemon.policies, "daemon.policies", "a directory of policy files", Path.is_dir)
    for key in ("helm", "kubectl"):
        binary = getattr(config.render, key)
        if binary is not None and shutil.which(binary) is None:
            problems.append(
                f"{config.file}: render.{key}: expected an executable {key}, "
                f"{binary!r} is none (not found, or not executable)"
            )
    return problems


def _file(path: Path) -> bool:
    # is_file raises on EACCES (a directory on the way that may not be searched).
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False


def _exposed(path: Path) -> str | None:
    """Why the secret's file `path` is readable by others; None if not, or if it cannot
    be read at all (reported as such)."""
    try:
        return exposed(path) if _file(path) else None
    except OSError:
        return None


def _pem_file(path: Path) -> bool:
    try:
        return _file(path) and b"-----BEGIN CERTIFICATE-----" in path.read_bytes()
    except OSError:
        return False


# Bounds that keep a value meaningful and within what the scheduler and clocks handle.
_MAX_SECONDS = 366 * 24 * 3600.0
_MAX_DAYS = 100 * 366.0
_MAX_OBJECTS = 1_000_000


def _daemon(r: _Reader, t: Mapping[str, Any]) -> DaemonConfig:
    d = DaemonConfig()
    policies = r.get(t, "daemon", "policies", _str, "a directory of policy files")
    address = r.get(
        t, "daemon", "metrics_address", _address, '"host:port" (port 0-65535), or "" for none', ""
    )

    def seconds(key: str, default: float) -> float:
        value = r.get(t, "daemon", key, _seconds, "a number of seconds > 0, at most a year")
        return value or default

    gap = r.get(t, "daemon", "debounce_s", _gap, "0 or a number of seconds > 0, at most a year")
    share = r.get(t, "daemon", "max_prune_share", _share, "a number from 0 to 1")
    floor = r.get(t, "daemon", "prune_floor", _floor, "a whole number of objects, 0 or more")
    retention = r.get(t, "daemon", "retention_days", _days, "a number of days > 0, at most 36600")
    concurrency = r.get(
        t,
        "daemon",
        "dry_run_concurrency",
        _concurrency,
        f"a whole number of requests from 1 to {MAX_DRY_RUN_CONCURRENCY}",
    )
    return DaemonConfig(
        policies=r.path(policies) if policies else None,
        metrics_address=(address or None) if "metrics_address" in t else d.metrics_address,
        resync_interval_s=seconds("resync_interval_s", d.resync_interval_s),
        fetch_interval_s=seconds("fetch_interval_s", d.fetch_interval_s),
        debounce_s=d.debounce_s if gap is None else gap,
        retention_days=retention or d.retention_days,
        max_prune_share=d.max_prune_share if share is None else share,
        prune_floor=d.prune_floor if floor is None else floor,
        wave_timeout_s=seconds("wave_timeout_s", d.wave_timeout_s),
        hook_timeout_s=seconds("hook_timeout_s", d.hook_timeout_s),
        dry_run_concurrency=concurrency or d.dry_run_concurrency,
    )


def _logs(r: _Reader, data: Mapping[str, Any]) -> LogsConfig:
    t = r.table(data, "logs", set(LogsConfig.__dataclass_fields__))
    level = r.get(t, "logs", "level", _level, '"debug", "info", "warning" or "error"', "info")
    url = r.get(t, "logs", "ship_url", _server, "an http:// or https:// URL of VictoriaLogs")
    ca_file = r.get(t, "logs", "ship_ca_file", _str, "a CA certificate file")
    if ca_file and not (url or "").startswith("https://"):
        # A CA file with no https URL to verify would be silently ignored.
        r.problem("logs.ship_ca_file", "set only with an https:// logs.ship_url")
    return LogsConfig(
        level=level or "info",
        ship_url=url.rstrip("/") if url else None,
        ship_ca_file=r.path(ca_file) if ca_file else None,
    )


# Matrix identifiers (spec: appendices, identifier grammar): a room ID `!opaque:server`
# and a user ID `@localpart:server`, the server name a host with an optional port.
_MATRIX_SERVER = r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?"
# Room version 12 (Synapse 1.135+) IDs are a bare hash, with no ":server".
_ROOM_ID = re.compile(rf"^![^:\s]+(:{_MATRIX_SERVER})?$")
_USER_ID = re.compile(rf"^@[a-z0-9._=/+-]+:{_MATRIX_SERVER}$")
_MAX_PER_MINUTE = 600
_MAX_QUEUE = 1_000_000


def _notify(r: _Reader, data: Mapping[str, Any]) -> NotifyConfig:
    """[notify]: only [notify.matrix] so far; absent, notifications are off."""
    t = r.table(data, "notify", {"matrix"})
    key = "notify.matrix"
    if not isinstance(t.get("matrix"), dict):
        if "matrix" in t:
            r.problem(key, "expected a table ([notify.matrix])")
        return NotifyConfig()
    m = t["matrix"]
    r.check_keys(m, key, set(MatrixConfig.__dataclass_fields__))
    homeserver = r.get(
        m,
        key,
        "homeserver",
        _homeserver,
        "an https:// URL of the homeserver (not http://: the access token goes with every request)",
        required=True,
    )
    room = r.get(
        m,
        key,
        "room_id",
        _matching(_ROOM_ID),
        'a room ID such as "!abc:example.org"',
        required=True,
    )
    token_file = r.get(m, key, "token_file", _str, "a file holding the access token", required=True)
    approvers = r.get(
        m,
        key,
        "approvers",
        _list_of(_USER_ID),
        'a list of Matrix user IDs such as ["@owner:example.org"]',
    )
    ca_file = r.get(m, key, "ca_file", _optional_str, 'a CA certificate file, or ""')
    defaults = MatrixConfig("", "", Path())
    ttl = r.get(m, key, "approval_ttl_s", _seconds, "a number of seconds > 0, at most a year")
    batch = r.get(m, key, "batch_s", _batch, "0 or a number of seconds > 0, at most 300")
    rate = r.get(
        m,
        key,
        "max_per_minute",
        _bounded_int(_MAX_PER_MINUTE),
        f"a whole number from 1 to {_MAX_PER_MINUTE}",
    )
    size = r.get(
        m, key, "queue_size", _bounded_int(_MAX_QUEUE), f"a whole number from 1 to {_MAX_QUEUE}"
    )
    if not (homeserver and room and token_file):
        return NotifyConfig()
    return NotifyConfig(
        MatrixConfig(
            homeserver=homeserver.rstrip("/"),
            room_id=room,
            token_file=r.path(token_file),
            approvers=approvers or (),
            ca_file=r.path(ca_file) if ca_file else None,
            approval_ttl_s=ttl or defaults.approval_ttl_s,
            batch_s=defaults.batch_s if batch is None else batch,
            max_per_minute=rate or defaults.max_per_minute,
            queue_size=size or defaults.queue_size,
        )
    )


def _homeserver(value: Any) -> str | None:
    """https://host[:port] with no credentials, query or fragment. Plain http is refused
    even on loopback: the access token travels with every request."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"https://([^\s/@?#]+)(/[^\s?#@]*)?", value)
    return value if m else None


def _matching(pattern: re.Pattern[str]) -> Callable[[Any], str | None]:
    return lambda value: value if isinstance(value, str) and pattern.fullmatch(value) else None


def _list_of(pattern: re.Pattern[str]) -> Callable[[Any], tuple[str, ...] | None]:
    def convert(value: Any) -> tuple[str, ...] | None:
        ok = isinstance(value, list) and all(
            isinstance(v, str) and pattern.fullmatch(v) for v in value
        )
        return tuple(dict.fromkeys(value)) if ok else None

    return convert


def _optional_str(value: Any) -> str | None:
    """A string, "" meaning unset (returned as "" so it is not reported as wrong)."""
    return value if isinstance(value, str) else None


def _bounded_int(most: int) -> Callable[[Any], int | None]:
    def convert(value: Any) -> int | None:
        whole = isinstance(value, int) and not isinstance(value, bool)
        return value if whole and 1 <= value <= most else None

    return convert


def _batch(value: Any) -> float | None:
    ok = _number(value) and 0 <= value <= 300
    return float(value) if ok else None


def _address(value: Any) -> str | None:
    """ "" (off), or host:port: an IPv4 address, a host name or a [bracketed] IPv6 one."""
    if value == "":
        return ""
    if not isinstance(value, str):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or len(port) > 5:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return value
    return value if re.fullmatch(_HOSTNAME, host.lower()) or _is_ipv4(host) else None


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _share(value: Any) -> float | None:
    ok = _number(value) and 0 <= value <= 1
    return float(value) if ok else None


def _floor(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_OBJECTS
    return value if ok else None


def _concurrency(value: Any) -> int | None:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return value if whole and 1 <= value <= MAX_DRY_RUN_CONCURRENCY else None


def _seconds(value: Any) -> float | None:
    ok = _number(value) and 0 < value <= _MAX_SECONDS
    return float(value) if ok else None


def _gap(value: Any) -> float | None:
    ok = _number(value) and 0 <= value <= _MAX_SECONDS
    return float(value) if ok else None


def _days(value: Any) -> float | None:
    ok = _number(value) and 0 < value <= _MAX_DAYS
    return float(value) if ok else None


def _number(value: Any) -> bool:
    """A finite int or float (TOML also has inf and nan), not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _level(value: Any) -> str | None:
    return value if value in ("debug", "info", "warning", "error") else None


def _render(r: _Reader, data: Mapping[str, Any]) -> RenderConfig:
    t = r.table(data, "render", set(RenderConfig.__dataclass_fields__))
    defaults = RenderConfig()

    def binary(key: str) -> str | None:
        # A bare name is looked up on PATH; anything with a '/' is a path.
        value = r.get(t, "render", key, _str, f"a path to the {key} binary")
        return str(r.path(value)) if value and "/" in value else value

    timeout = r.get(t, "render", "timeout_seconds", _positive_number, "a number of seconds > 0")
    max_bytes = r.get(t, "render", "max_file_bytes", _positive_int, "a whole number of bytes > 0")
    mirrors = _mirrors(r, t)
    allow_remote = r.get(t, "render", "allow_remote", _hosts, "a list of host names")
    ca_file = r.get(t, "render", "chart_ca_file", _str, "a CA certificate file")

    def limit(key: str, default: int) -> int:
        return r.get(t, "render", key, _positive_int, "a whole number > 0") or default

    return RenderConfig(
        timeout_seconds=timeout or defaults.timeout_seconds,
        max_file_bytes=max_bytes or defaults.max_file_bytes,
        helm=binary("helm"),
        kubectl=binary("kubectl"),
        chart_mirrors=mirrors,
        allow_remote=allow_remote or (),
        chart_ca_file=r.path(ca_file) if ca_file else None,
        chart_credentials=_chart_credentials(r, t),
        max_output_bytes=limit("max_output_bytes", defaults.max_output_bytes),
        max_objects=limit("max_objects", defaults.max_objects),
        memory_limit_bytes=limit("memory_limit_bytes", defaults.memory_limit_bytes),
        cpu_seconds=limit("cpu_seconds", defaults.cpu_seconds),
        max_app_depth=limit("max_app_depth", defaults.max_app_depth),
        kustomize_build_options=_kustomize_options(r, t),
    )


# The kustomize build options accepted, with the values each may take (None: a bare
# flag). `--enable-helm` runs the reconciler's own helm in the sandbox; the load
# restrictor is lifted within the checkout only, which is all the sandbox lets it read.
KUSTOMIZE_BUILD_OPTIONS: Mapping[str, tuple[str, ...] | None] = {
    "--enable-helm": None,
    "--load-restrictor": ("LoadRestrictionsRootOnly", "LoadRestrictionsNone"),
}
# Refused with why: each runs code or reaches past the sandbox.
_KUSTOMIZE_REFUSED = {
    "--enable-alpha-plugins": "runs plugin programs",
    "--enable-exec": "runs exec plugins",
    "--mount": "mounts host paths into function containers",
    "--network": "gives function containers the network",
    "--helm-command": "the reconciler runs its own helm",
}


def _kustomize_options(r: _Reader, t: Mapping[str, Any]) -> tuple[str, ...]:
    """[render] kustomize_build_options: a string of options, each `--name` or
    `--name=value` (or `--name value`), normalised to `--name=value`."""
    key = "render.kustomize_build_options"
    raw = t.get("kustomize_build_options", "")
    if not isinstance(raw, str):
        r.problem(key, f"expected a string of kustomize build options, got {_describe(raw)}")
        return ()
    words = raw.split()
    options: list[str] = []
    while words:
        name, sep, value = words.pop(0).partition("=")
        refused = _KUSTOMIZE_REFUSED.get(name)
        allowed = KUSTOMIZE_BUILD_OPTIONS.get(name, ())
        if refused is not None or name not in KUSTOMIZE_BUILD_OPTIONS:
            why = refused or "not supported"
            accepted = ", ".join(KUSTOMIZE_BUILD_OPTIONS)
            r.problem(key, f"option {name}: {why} (accepted: {accepted})")
            continue
        if allowed is None:
            if sep:
                r.problem(key, f"option {name} takes no value")
            else:
                options.append(name)
            continue
        if not sep and words and not words[0].startswith("-"):
            value = words.pop(0)
        if value not in allowed:
            r.problem(key, f"option {name}: expected one of {', '.join(allowed)}, got {value!r}")
        else:
            options.append(f"{name}={value}")
    return tuple(dict.fromkeys(options))


def _chart_credentials(r: _Reader, t: Mapping[str, Any]) -> tuple[ChartCredential, ...]:
    """[[render.chart_credentials]]: url (prefix), username, password_file."""
    found = []
    for key, table in r.tables(t, "chart_credentials"):
        key = f"render.{key}"
        r.check_keys(table, key, {"url", "username", "password_file"})
        url = r.get(table, key, "url", _str, "a chart repository or registry URL", required=True)
        user = r.get(table, key, "username", _str, "a user name", required=True)
        file = r.get(table, key, "password_file", _str, "a password file", required=True)
        if url and "@" in url.partition("://")[2].partition("/")[0]:
            r.problem(f"{key}.url", "credentials belong in username and password_file, not the URL")
        elif url and user and file:
            found.append(ChartCredential(url, user, r.path(file)))
    return tuple(found)


def _mirrors(r: _Reader, t: Mapping[str, Any]) -> dict[str, str]:
    """[render.chart_mirrors]: chart repository URL = mirror URL, each entry checked."""
    table = t.get("chart_mirrors", {})
    if not isinstance(table, dict):
        r.problem("render.chart_mirrors", 'expected a table of chart repository URL = "mirror URL"')
        return {}
    mirrors: dict[str, str] = {}
    for url, mirror in table.items():
        key = f"render.chart_mirrors.{json.dumps(url)}"
        if not re.fullmatch(r"\S+", url):
            r.problem(key, "expected the chart repository URL an Application names as its key")
        elif not isinstance(mirror, str) or not re.match(r"^(https?|oci)://\S+$", mirror):
            r.problem(key, f"expected an http(s):// or oci:// mirror URL, got {_describe(mirror)}")
        else:
            mirrors[normalise_url(url)] = mirror
    return mirrors


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = rf"(?=[^:]{{1,253}}(:|$)){_LABEL}(\.{_LABEL})*"
_HOST = re.compile(rf"^{_HOSTNAME}(:\d{{1,5}})?$")


def _hosts(value: Any) -> tuple[str, ...] | None:
    """Host names (optionally host:port), lower-cased; no schemes, paths or wildcards."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    hosts = tuple(v.strip().lower() for v in value)
    return hosts if all(_HOST.match(h) for h in hosts) else None


def _repos(r: _Reader, data: Mapping[str, Any]) -> list[RepoConfig]:
    repos: list[RepoConfig] = []
    names: set[str] = set()
    urls: dict[str, str] = {}
    entries = r.tables(data, "repos")
    if not entries:
        r.problem("repos", "expected at least one [[repos]] table")
    for prefix, t in entries:
        r.check_keys(t, prefix, {"name", "path", "url", "ref", "apps"})
        name = r.get(
            t, prefix, "name", _name, "a name of letters, digits, '.', '_' or '-'", required=True
        )
        path = r.get(t, prefix, "path", _str, "the path of a local clone", required=True)
        url = r.get(t, prefix, "url", _str, "the URL Applications use as repoURL")
        ref = r.get(
            t,
            prefix,
            "ref",
            _ref,
            "a full ref name such as 'refs/remotes/origin/main'",
            DEFAULT_REF,
        )
        apps = r.get(t, prefix, "apps", _str_list, "a list of repo-relative directories")
        if name in names:
            r.problem(f"{prefix}.name", f"expected a unique name; {name!r} is used twice")
        if url:
            key = normalise_url(url)
            if key in urls:
                r.problem(
                    f"{prefix}.url", f"expected a unique URL; also used by repo {urls[key]!r}"
                )
            urls[key] = name or prefix
        if name and path:
            names.add(name)
            repos.append(RepoConfig(name, r.path(path), url, ref or DEFAULT_REF, apps or ()))
    return repos


def _clusters(r: _Reader, data: Mapping[str, Any]) -> list[ClusterConfig]:
    clusters: list[ClusterConfig] = []
    names: set[str] = set()
    servers_seen: dict[str, str] = {}
    entries = r.tables(data, "clusters")
    if not entries:
        r.problem("clusters", "expected at least one [[clusters]] table")
    for prefix, t in entries:
        r.check_keys(
            t, prefix, {"name", "mode", "argocd", "kubeconfig", "context", "servers", "network"}
        )
        name = r.get(
            t, prefix, "name", _name, "a name of letters, digits, '.', '_' or '-'", required=True
        )
        argocd = r.get(t, prefix, "argocd", _bool, "true or false", False)
        mode = r.get(t, prefix, "mode", _mode, '"apply" or "report"')
        if argocd and mode == "apply":
            # Argo CD already syncs such a cluster; two writers would fight over every object.
            r.problem(
                f"{prefix}.mode",
                'expected "report" because argocd = true: Argo CD owns sync on this cluster, '
                "so the reconciler only reports drift there",
            )
        kubeconfig = r.get(
            t, prefix, "kubeconfig", _str, "a path to a kubeconfig file", required=True
        )
        context = r.get(t, prefix, "context", _str, "a kubeconfig context name")
        servers = r.get(
            t, prefix, "servers", _str_list, "a non-empty list of API server URLs", required=True
        )
        if servers is not None and not servers:
            r.problem(f"{prefix}.servers", "expected a non-empty list of API server URLs")
        for i, server in enumerate(servers or ()):
            if _server(server) is None:
                r.problem(f"{prefix}.servers[{i}]", f"expected an https:// URL, got {server!r}")
                continue
            key = normalise_server(server)
            if key in servers_seen:
                r.problem(
                    f"{prefix}.servers[{i}]",
                    f"expected each server to name one cluster; {server!r} is also "
                    f"listed by cluster {servers_seen[key]!r}",
                )
            servers_seen[key] = name or prefix
        network = _network(t["network"]) if "network" in t else None
        if "network" in t and network is None:
            r.problem(
                f"{prefix}.network",
                "expected a CIDR such as '10.20.0.0/24', got " + _describe(t["network"]),
            )
        if name in names:
            r.problem(f"{prefix}.name", f"expected a unique name; {name!r} is used twice")
        if name and kubeconfig and servers:
            names.add(name)
            resolved_mode: Mode = "apply" if mode == "apply" and not argocd else "report"
            clusters.append(
                ClusterConfig(
                    name=name,
                    mode=resolved_mode,
                    argocd=bool(argocd),
                    kubeconfig=r.path(kubeconfig),
                    context=context,
                    servers=tuple(servers),
                    network=network,
                )
            )
    return clusters


def _apps(
    r: _Reader, data: Mapping[str, Any], repos: set[str], clusters: set[str]
) -> list[AppConfig]:
    apps: list[AppConfig] = []
    names: set[str] = set()
    for prefix, t in r.tables(data, "apps"):
        r.check_keys(t, prefix, {"name", "repo", "path", "cluster", "namespace"})
        name = r.get(t, prefix, "name", _name, "an app name", required=True)
        repo = r.get(t, prefix, "repo", _str, "the name of a [[repos]] entry", required=True)
        path = r.get(t, prefix, "path", _str, "a repo-relative directory", required=True)
        cluster = r.get(
            t, prefix, "cluster", _str, "the name of a [[clusters]] entry", required=True
        )
        namespace = r.get(t, prefix, "namespace", _name, "a namespace name", required=True)
        if repo and repo not in repos:
            r.problem(f"{prefix}.repo", f"expected one of {sorted(repos)}, got {repo!r}")
        if cluster and cluster not in clusters:
            r.problem(f"{prefix}.cluster", f"expected one of {sorted(clusters)}, got {cluster!r}")
        if name in names:
            r.problem(f"{prefix}.name", f"expected a unique name; {name!r} is used twice")
        if name and repo and path and cluster and namespace:
            names.add(name)
            apps.append(AppConfig(name, repo, path, cluster, namespace))
    return apps
