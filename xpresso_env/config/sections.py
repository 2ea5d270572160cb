"""The settings: one frozen dataclass a section, ``Settings`` holding them all, and the names of
the environment variables that are not settings."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

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

