"""Settings: frozen dataclasses. Precedence: defaults < YAML file < XPRESSO_ENV_* env < CLI flags.

Every key has a type; an unknown key or a value of the wrong type is a ConfigError that reads
``WHERE: dotted.key: message``, WHERE being the file or the environment variable. An
``XPRESSO_ENV_*`` variable that names no setting (nor one of ``OTHER_ENV``) is an error too: a
typo must not be ignored silently.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

from .core.errors import ConfigError
from .core.push_address import MAX_REPOSITORY, SAMPLE_GROUP, parse_url, render_namespace

ENV_PREFIX = "XPRESSO_ENV_"
CONFIG_ENV = "XPRESSO_ENV_CONFIG"
LOG_LEVEL_ENV = "XPRESSO_ENV_LOG_LEVEL"  # the CLI's log level
DEBUG_ENV = "XPRESSO_ENV_DEBUG"  # the CLI prints a traceback with its one-line error
BLOCK_PLUGINS_ENV = "XPRESSO_ENV_BLOCK_PLUGINS"  # read by plugin.make_plugin_manager
# The prefixed variables that are not settings.
OTHER_ENV: frozenset[str] = frozenset({CONFIG_ENV, LOG_LEVEL_ENV, DEBUG_ENV, BLOCK_PLUGINS_ENV})

# server.processes: a positive integer, or "auto" (read as the CPU count when the settings load).
ProcessCount = typing.NewType("ProcessCount", int)
PROCESSES_AUTO = "auto"


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "sqlite"
    # File for file backends. None: var/xpresso.sqlite3 (sqlite) or var/xpresso.yaml (yaml).
    path: Optional[str] = None
    dsn: Optional[str] = None  # PostgreSQL connection string
    pool_max: int = 10
    busy_timeout_s: float = 10.0
    # postgres (CONTRACT §16): the longest a statement may run, and a connection attempt may take,
    # before the request answers 503: a hung database is an outage, never a frozen server.
    statement_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0


@dataclass(frozen=True)
class DockerBuilderSettings:
    base_url: Optional[str] = None  # None: DOCKER_HOST or the default socket
    network_mode: Optional[str] = None  # RUN steps' network: bridge | host | none | a network; None: the daemon's default


@dataclass(frozen=True)
class BuildahBuilderSettings:
    storage_driver: str = "vfs"
    isolation: str = "chroot"
    root: Optional[str] = None  # buildah --root (None: buildah's default)
    runroot: Optional[str] = None
    network: Optional[str] = None  # buildah build --network (none needs isolation oci); None: buildah's default


@dataclass(frozen=True)
class RegistrySettings:
    """Push every successful build to a registry (CONTRACT section 11); url None: no push."""

    url: Optional[str] = None  # http(s)://host[:port], nothing more
    username: Optional[str] = None
    password_file: Optional[str] = None  # read at each push; never logged
    insecure: bool = False  # allow plain HTTP (loopback, lab network)
    namespace: str = "{group}"  # <host>/<namespace>/<name>:<tag>; lower-cased


@dataclass(frozen=True)
class BuilderSettings:
    backend: str = "auto"
    docker: DockerBuilderSettings = field(default_factory=DockerBuilderSettings)
    buildah: BuildahBuilderSettings = field(default_factory=BuildahBuilderSettings)


@dataclass(frozen=True)
class ImagesSettings:
    nfs_root: str = "var/built_images"
    retention_days: int = 6
    logs_root: str = "var/build_logs"
    workspace_root: str = "var/workspaces"
    jobs_glob: str = "*_job.py"
    manifests_glob: str = "*.tem"
    sweep_interval_s: float = 3600.0


@dataclass(frozen=True)
class PolarisSettings:
    repo: Optional[str] = None  # local path or git URL of the Polaris repository
    dockerfile: str = "Dockerfile"


@dataclass(frozen=True)
class BuildsSettings:
    max_concurrent: int = 2
    timeout_s: float = 3600.0
    lease_s: float = 60.0  # a build whose worker stops renewing its claim this long is taken over
    enabled: bool = True  # false: `serve` runs no builds nor the retention sweep (`xpresso-env worker` does)
    max_queued_per_group: int = 20  # building images of one group beyond which a submit gets 429
    poll_s: float = 1.0  # how often idle workers look for builds submitted through other processes


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Requests the server handles at once, shared out among its processes (threads_per_process).
    threads: int = 8
    max_body_bytes: int = 1048576
    access_log: bool = True
    response_cache_bytes: int = 8388608  # GET answers kept in memory (never stale); 0 turns it off
    # waitress accepts no new connection while this many are open (its default, 100, let one
    # client's idle connections lock everyone else out). Each costs a file descriptor and a few KB.
    connection_limit: int = 1000
    # An idle or half-sent connection is closed after this long without a byte (waitress: 120 s).
    channel_timeout_s: float = 30.0
    # How often idle connections are looked for: a connection lives at most
    # channel_timeout_s + cleanup_interval_s without activity.
    cleanup_interval_s: float = 10.0
    metrics: bool = True  # GET /metrics (Prometheus, no token); false: 404
    log_format: str = "text"  # text | json (one object per line: logfmt.py)
    # The web page at / and /ui/ (api/ui.py); false serves the API only.
    ui: bool = True
    # Processes serving the one port (CONTRACT section 15); "auto": one per CPU. 1: `serve` is the
    # server itself; more: a supervisor starts them, replaces one that dies, reloads on SIGHUP.
    processes: ProcessCount = ProcessCount(1)
    # On SIGTERM or a reload, a process stops accepting and finishes the requests it holds for at
    # most this long before it closes what is left.
    drain_s: float = 30.0

    @property
    def threads_per_process(self) -> int:
        """Each serving process's share of ``threads`` (rounded up): more processes add cores, not
        threads. Every thread of a process wants its one GIL, and a write holding the store's lock
        waits behind them (benchmarks/README.md, "Threads shared out among the processes")."""
        return -(-self.threads // self.processes)  # both are checked positive


@dataclass(frozen=True)
class LdapSettings:
    """The ``ldap`` identity provider (CONTRACT section 13; plugins/identity_ldap.py)."""

    url: Optional[str] = None  # ldap://host[:port] or ldaps://host[:port]
    start_tls: bool = False
    ca_file: Optional[str] = None  # CA certificates to check the directory's certificate with
    user_dn_template: Optional[str] = None  # uid={username},ou=people,dc=example,dc=org: bind directly
    bind_dn: Optional[str] = None  # else search (as bind_dn) then bind as what was found
    bind_password: Optional[str] = None
    user_search_base: Optional[str] = None
    user_filter: str = "(uid={username})"
    group_search_base: Optional[str] = None
    group_filter: str = "(|(member={user_dn})(uniqueMember={user_dn}))"
    email_attribute: str = "mail"
    group_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group DN -> [GROUP:ROLE]
    connect_timeout_s: float = 5.0  # a dead directory answers 503 after about this long
    timeout_s: float = 5.0  # each operation (bind, search)


@dataclass(frozen=True)
class HeaderAuthSettings:
    """The ``header`` identity provider: a trusted reverse proxy names the user."""

    name: Optional[str] = None  # e.g. X-Remote-User
    trusted_proxies: tuple[str, ...] = ()  # CIDRs; the header from anywhere else is ignored


@dataclass(frozen=True)
class AuthSettings:
    secret_file: str = "var/jwt-secret"
    secret: Optional[str] = None  # given directly instead of secret_file
    token_days: int = 30
    providers: tuple[str, ...] = ("local",)  # identity providers, tried in this order
    session_hours: float = 12.0  # lifetime of a sign-in's session token
    token_days_max: int = 365  # the longest lifetime of a token a user makes for themselves
    login_max_failures: int = 5  # failed sign-ins of one name within login_window_s before 429s
    login_window_s: float = 900.0
    # argon2id's cost: a change is applied to each password at its next sign-in (rehash)
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    ldap: LdapSettings = field(default_factory=LdapSettings)
    header: HeaderAuthSettings = field(default_factory=HeaderAuthSettings)


@dataclass(frozen=True)
class EventsSettings:
    """Webhook deliveries (CONTRACT section 9)."""

    timeout_s: float = 10.0  # a receiver must answer 2xx within this long; a hang costs one slot this long
    retry_base_s: float = 5.0  # first retry after this long, then doubling
    max_attempts: int = 8  # then the delivery is `failed`
    allow_private: bool = True  # false: loopback, link-local and private addresses are refused
    concurrency: int = 4  # deliveries in flight at once per server process (the slots)
    poll_s: float = 0.5  # how often the outbox is looked at for work written by other processes
    lease_s: float = 30.0  # a claimed delivery whose process died is taken over after timeout_s + this
    max_webhooks_per_group: int = 25  # live webhooks a group may have; one more is a 409
    deliveries_retention_days: int = 7  # delivered and failed deliveries older than this are swept
    sweep_interval_s: float = 3600.0  # how often a process runs that sweep
    deliver: bool = True  # false: `serve` journals events but fans out and delivers none (a `worker` does)


@dataclass(frozen=True)
class HistorySettings:
    retention_days: int = 90  # history rows older than this are removed (deliveries: events.deliveries_retention_days)
    sweep_interval_s: float = 3600.0  # how often a server runs that sweep


@dataclass(frozen=True)
class ProbesSettings:
    """Operational state probes (CONTRACT section 8; services/probes.py)."""

    enabled: bool = True  # false: this process probes nothing (states stay as stored)
    interval_s: float = 30.0  # each live, not DISABLED record is probed once per interval (by one process)
    timeout_s: float = 5.0  # one probe, all included (connect, redirects, body; file checks)
    concurrency: int = 16  # probes running at once in one process
    fail_after: int = 3  # consecutive failures that turn ONLINE into OFFLINE
    ok_after: int = 2  # consecutive successes that turn OFFLINE into ONLINE
    lease_s: float = 30.0  # a claimed probe whose process died is taken over after this long
    sync_s: float = 0.5  # how often to look for records added or edited by other processes (change counters)
    max_body_bytes: int = 1048576  # a Jenkins answer larger than this is a failed probe


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings = field(default_factory=StorageSettings)
    builder: BuilderSettings = field(default_factory=BuilderSettings)
    images: ImagesSettings = field(default_factory=ImagesSettings)
    polaris: PolarisSettings = field(default_factory=PolarisSettings)
    builds: BuildsSettings = field(default_factory=BuildsSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    probes: ProbesSettings = field(default_factory=ProbesSettings)
    # Folder that relative paths are resolved against (the config file's folder, else cwd).
    base_dir: str = field(default=".", compare=False)
    source: Optional[str] = field(default=None, compare=False)  # the config file used, if any

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """An absolute path for a configured path (relative ones are relative to base_dir)."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def storage_path(self, default_name: str) -> Path:
        return self.resolve(self.storage.path or f"var/{default_name}")  # type: ignore[return-value]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, where: str, from_text: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and str(value).strip().lower() in ("", "null", "none")):
            return None
        return _coerce(args[0], value, where, from_text)
    if value is None:
        raise ConfigError(f"{where}: a value is required")
    if tp is ProcessCount:
        return _process_count(value, where)
    if origin is tuple:  # a list of strings: a YAML list, or comma-separated text
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(str, v, where, from_text) for v in value)
    if origin is dict:  # a mapping of strings to lists of strings (YAML, or YAML text in the environment)
        if from_text and isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"{where}: expected a mapping, got {value!r}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        inner = typing.get_args(tp)[1]
        return {_coerce(str, k, where, from_text): _coerce(inner, v, f"{where}.{k}", from_text)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if from_text:
            try:
                return int(str(value).strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(str(value).strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str) and value != "":
            return value
        if from_text and str(value) != "":
            return str(value)
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _process_count(value: Any, where: str) -> ProcessCount:
    if isinstance(value, str) and value.strip().lower() == PROCESSES_AUTO:
        return ProcessCount(os.cpu_count() or 1)
    try:
        count = int(str(value).strip()) if not isinstance(value, bool) else 0
    except ValueError:
        count = 0
    if count <= 0:
        raise ConfigError(f"{where}: expected a positive integer or {PROCESSES_AUTO}, got {value!r}")
    return ProcessCount(count)


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _merge_section(cls: type, current: Any, data: Any, source: str, prefix: str = "") -> Any:
    """``data`` (from ``source``: a file, or "command line") merged into the section ``current``
    found at the dotted key ``prefix``."""
    if not isinstance(data, Mapping):
        at = f"{source}: {prefix}" if prefix else source
        raise ConfigError(f"{at}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.compare}
    changes = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            hint = _hint(str(key), known) or f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"{source}: {dotted}: unknown key{hint}")
        tp = hints[key]
        if _is_section(tp):
            changes[key] = _merge_section(tp, getattr(current, key), value, source, dotted)
        else:
            changes[key] = _coerce(tp, value, f"{source}: {dotted}", from_text=False)
    return dataclasses.replace(current, **changes)


def _env_names(cls: type, prefix: str) -> set[str]:
    """Every XPRESSO_ENV_* variable that names a setting."""
    hints = typing.get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.compare:
            name = f"{prefix}_{f.name.upper()}"
            names |= _env_names(hints[f.name], name) if _is_section(hints[f.name]) else {name}
    return names


def _check_env_names(env: Mapping[str, str]) -> None:
    known = _env_names(Settings, ENV_PREFIX.rstrip("_")) | OTHER_ENV
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            raise ConfigError(f"environment variable {name}: unknown setting{_hint(name, known)}")


def _env_overrides(cls: type, current: Any, env: Mapping[str, str], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    changes = {}
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        name = f"{prefix}_{f.name.upper()}"
        tp = hints[f.name]
        if _is_section(tp):
            changes[f.name] = _env_overrides(tp, getattr(current, f.name), env, name)
        elif name in env:
            changes[f.name] = _coerce(tp, env[name], f"environment variable {name}", from_text=True)
    return dataclasses.replace(current, **changes)


def yaml_error_line(file: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, the line and column (1-based) and what is wrong, instead of
    PyYAML's several lines about ``"<unicode string>"``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = " ".join(str(getattr(exc, "context", None) or "").split())
    what = f"{problem} ({context})" if context else problem
    if mark is None:
        return f"{file}: not valid YAML: {what}"
    return f"{file}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what}"


def load_settings(path: Optional[str | os.PathLike] = None,
                  env: Optional[Mapping[str, str]] = None,
                  overrides: Optional[Mapping[str, Any]] = None) -> Settings:
    """Build Settings. ``path`` falls back to $XPRESSO_ENV_CONFIG; ``overrides`` is a nested dict
    (as from CLI flags) applied last."""
    env = os.environ if env is None else env
    _check_env_names(env)
    path = path or env.get(CONFIG_ENV) or None
    settings = Settings(base_dir=os.getcwd())
    if path:
        file = Path(path).expanduser().resolve()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_line(file, exc)) from None
        settings = dataclasses.replace(settings, base_dir=str(file.parent), source=str(file))
        settings = _merge_section(Settings, settings, data, str(file))
    settings = _env_overrides(Settings, settings, env, ENV_PREFIX.rstrip("_"))
    if overrides:
        settings = _merge_section(Settings, settings, overrides, "command line")
    _check_values(settings)
    return settings


def _check_values(s: Settings) -> None:
    where = s.source or "configuration"
    positive = {
        "storage.pool_max": s.storage.pool_max, "storage.statement_timeout_s": s.storage.statement_timeout_s,
        "storage.connect_timeout_s": s.storage.connect_timeout_s, "images.retention_days": s.images.retention_days + 1,
        "builds.max_concurrent": s.builds.max_concurrent, "builds.timeout_s": s.builds.timeout_s,
        "builds.max_queued_per_group": s.builds.max_queued_per_group, "builds.poll_s": s.builds.poll_s,
        "server.port": s.server.port, "server.threads": s.server.threads,
        "server.max_body_bytes": s.server.max_body_bytes, "auth.token_days": s.auth.token_days,
        "server.connection_limit": s.server.connection_limit, "server.channel_timeout_s": s.server.channel_timeout_s,
        "server.cleanup_interval_s": s.server.cleanup_interval_s, "server.drain_s": s.server.drain_s,
        "events.timeout_s": s.events.timeout_s, "events.retry_base_s": s.events.retry_base_s,
        "events.max_attempts": s.events.max_attempts, "events.concurrency": s.events.concurrency,
        "events.poll_s": s.events.poll_s, "events.lease_s": s.events.lease_s,
        "events.max_webhooks_per_group": s.events.max_webhooks_per_group,
        "events.deliveries_retention_days": s.events.deliveries_retention_days,
        "events.sweep_interval_s": s.events.sweep_interval_s,
        "history.retention_days": s.history.retention_days,
        "history.sweep_interval_s": s.history.sweep_interval_s,
        "probes.interval_s": s.probes.interval_s, "probes.timeout_s": s.probes.timeout_s,
        "probes.concurrency": s.probes.concurrency, "probes.fail_after": s.probes.fail_after,
        "probes.ok_after": s.probes.ok_after, "probes.lease_s": s.probes.lease_s, "probes.sync_s": s.probes.sync_s,
        "probes.max_body_bytes": s.probes.max_body_bytes,
        "auth.session_hours": s.auth.session_hours, "auth.token_days_max": s.auth.token_days_max,
        "auth.login_max_failures": s.auth.login_max_failures, "auth.login_window_s": s.auth.login_window_s,
        "auth.password_time_cost": s.auth.password_time_cost, "auth.password_memory_kib": s.auth.password_memory_kib,
        "auth.ldap.connect_timeout_s": s.auth.ldap.connect_timeout_s, "auth.ldap.timeout_s": s.auth.ldap.timeout_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: {key}: must be positive")
    if s.server.response_cache_bytes < 0:
        raise ConfigError(f"{where}: server.response_cache_bytes: must be 0 (off) or positive")
    if s.server.port > 65535:
        raise ConfigError(f"{where}: server.port: must be at most 65535")
    if s.server.log_format not in ("text", "json"):
        raise ConfigError(f"{where}: server.log_format: must be text or json, got {s.server.log_format!r}")
    _check_registry_and_network(s, where)


def _check_registry(registry: RegistrySettings) -> None:
    """Load-time checks of ``registry.*`` (its grammar: core/push_address.py, which the build side
    uses too); raises ValueError naming the key."""
    if registry.url is None:
        return
    address = parse_url(registry.url, registry.insecure)
    render_namespace(registry.namespace, SAMPLE_GROUP)
    if (registry.username is None) != (registry.password_file is None):
        raise ValueError("registry.username and registry.password_file go together: set both or neither")
    if len(address.host) + len(registry.namespace) > MAX_REPOSITORY:
        raise ValueError("registry.url and registry.namespace make repository names longer than 255 characters")


def _check_registry_and_network(s: Settings, where: str) -> None:
    try:
        _check_registry(s.registry)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    b = s.builder.buildah
    if b.network not in (None, "host") and b.isolation == "chroot":
        raise ConfigError(f"{where}: builder.buildah.network: {b.network!r} needs builder.buildah.isolation: oci "
                          f"(chroot isolation always shares the host's network)")


def settings_as_dict(s: Settings) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    out.pop("base_dir", None)
    out.pop("source", None)
    return out
