"""The `xpresso-env` command line (CONTRACT section 5).

A failing command prints one line on standard error and exits non-zero: never a traceback
(set XPRESSO_ENV_DEBUG=1 to get one).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from . import __version__
from .config import DEBUG_ENV, LOG_LEVEL_ENV, ServerSettings, Settings, load_settings
from .core.errors import ConfigError, StorageUnavailable, XpressoError
from .core.timeutil import format_time
from .http.server import quiet_queue_warnings, waitress_options
from .runtime.logfmt import configure_logging
from .runtime.redact import redact

if TYPE_CHECKING:
    from .app import AppContext
    from .storage import StorageBackend

log = logging.getLogger("xpresso_env.cli")

Handler = Callable[[argparse.Namespace, Settings], Optional[int]]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SWITCH_INTERVAL_S = 0.001
STORAGE_RETRY_S = 2.0  # `serve` started while the storage is unreachable tries again this often
# Descriptors beside the connections: storage, log files, build processes and their pipes.
FD_HEADROOM = 256
ROLE_NONE = "none"  # `user set-role NAME GROUP:none` takes NAME out of GROUP


@contextmanager
def opened(settings: Settings, **kwargs) -> Iterator["AppContext"]:
    """An application context for one command, closed at the end."""
    from .app import build_context

    ctx = build_context(settings, **kwargs)
    try:
        yield ctx
    finally:
        ctx.close()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])


# -- init and serve ---------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from .access.auth import load_secret
    from .plugin import make_plugin_manager, pick_storage

    storage = pick_storage(make_plugin_manager(), settings.storage.backend).factory(settings)
    try:
        before = storage.current_version()
        after = storage.init()
    finally:
        storage.close()
    load_secret(settings, create=True)
    where = settings.storage.dsn if settings.storage.backend == "postgres" else (
        settings.storage_path("xpresso.yaml" if settings.storage.backend == "yaml" else "xpresso.sqlite3"))
    change = "created" if before == 0 else ("upgraded" if after > before else "already up to date")
    print(f"storage {settings.storage.backend} at {redact(str(where))}: schema version {after} ({change})")
    if args.group or args.admin:
        _first_admin(args, settings)
    return 0


def _first_admin(args: argparse.Namespace, settings: Settings) -> None:
    """`init --group G --admin NAME`: a first group and system administrator, and their token."""
    from .core.errors import AlreadyExists

    with opened(settings, images=False) as ctx:
        if args.group:
            try:
                ctx.auth.add_group(args.group)
                print(f"group {args.group} created")
            except AlreadyExists:
                print(f"group {args.group} exists")
        if args.admin:
            try:
                ctx.auth.add_user(args.admin, superuser=True)
                print(f"system administrator {args.admin} created")
            except AlreadyExists:
                print(f"user {args.admin} exists")
            issued = ctx.auth.issue_token(args.admin)
            print(f"token for {issued.user}, id (jti) {issued.jti}, expires {issued.expires}")
            print(issued.display)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .app import build_context, create_wsgi_app

    s = settings.server
    # A thread back from SQLite or a socket waits for the GIL up to one switch interval while
    # other threads compute. A write transaction makes several such calls under a lock every
    # writer needs, so with Python's default interval a write held that lock many times longer
    # than its own work under load (figures: benchmarks/README.md, mixed load).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _raise_open_files_limit(s.connection_limit + FD_HEADROOM)
    ctx = build_context(settings, check_schema=False)
    try:
        # Bind first: a port in use is reported before anything else happens.
        server = _listen(create_wsgi_app(ctx), s)
        try:
            # waitress ignores SIGTERM; turn it into a clean exit so running builds are handed back.
            signal.signal(signal.SIGTERM, _exit_on_signal)
            _wait_for_storage(ctx.storage, redact(settings.storage.dsn or ""))
            ctx.start()
            log.info("xpresso-env serving on http://%s:%s/ (storage %s, %s threads, at most %s connections)",
                     s.host, s.port, settings.storage.backend, s.threads, s.connection_limit)
            server.run()
        finally:
            server.close()
    finally:
        ctx.close()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Claim and run builds, and the retention sweep, without serving HTTP (CONTRACT section 11).
    Builds whatever ``builds.enabled`` says: that key keeps `serve` processes out of building."""
    import dataclasses
    import threading

    from .app import build_context

    builds = dataclasses.replace(settings.builds, enabled=True,
                                 max_concurrent=args.concurrency or settings.builds.max_concurrent)
    # Probes are the `serve` processes' work (CONTRACT §8): a build host may not see the harnesses' paths.
    settings = dataclasses.replace(settings, builds=builds, probes=dataclasses.replace(settings.probes, enabled=False))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    ctx = build_context(settings, check_schema=False)
    try:
        # SIGTERM (and Ctrl-C) end it cleanly: running builds are handed back to the queue.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        _wait_for_storage(ctx.storage, redact(settings.storage.dsn or ""))
        ctx.start()
        log.info("xpresso-env worker: %d build thread(s) on storage %s, no HTTP", builds.max_concurrent,
                 settings.storage.backend)
        threading.Event().wait()  # until a signal ends the process
    finally:
        ctx.close()
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _listen(app: Callable, s: ServerSettings):
    """The waitress server, bound and listening; a ConfigError naming the address if it cannot."""
    import waitress

    try:
        return waitress.create_server(app, **waitress_options(s))
    except OSError as exc:
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ConfigError(f"cannot listen on {s.host}:{s.port}: {reason}; "
                          f"choose another port with --port (or address with --host)") from None


def _wait_for_storage(storage: "StorageBackend", where: str) -> None:
    """Return once the storage answers with the schema this code needs. An unreachable storage
    (a database still starting) is retried for as long as it takes; an outdated schema stops
    at once (SchemaOutdated: a person must run `init`)."""
    from .storage import check_ready

    while True:
        try:
            check_ready(storage)
            return
        except StorageUnavailable as exc:
            at = f" at {where}" if where else ""
            log.warning("storage %s%s not reachable (%s): retrying in %g s", storage.name, at, exc.detail,
                        STORAGE_RETRY_S)
            time.sleep(STORAGE_RETRY_S)


def _raise_open_files_limit(wanted: int) -> None:
    """Each connection holds a file descriptor: raise the soft limit toward ``wanted`` (within
    the hard limit), and say so when server.connection_limit cannot be reached."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open files are limited to %d (ulimit -n): fewer than server.connection_limit "
                    "plus %d can be open", target, FD_HEADROOM)


def _exit_on_signal(signum, frame) -> None:
    log.info("signal %s: stopping", signum)
    raise SystemExit(0)


# -- groups, users, tokens --------------------------------------------------------------------

def cmd_group_add(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.add_group(args.name)
    print(f"group {args.name} created")
    return 0


def cmd_group_list(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        groups = ctx.auth.list_groups()
        users = ctx.auth.list_users()
    rows = [(g.name, format_time(g.date_created), str(sum(g.name in u.roles for u in users))) for g in groups]
    print(_table(("GROUP", "CREATED", "MEMBERS"), rows))
    return 0


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from .access.auth import parse_membership

    roles = dict(parse_membership(item) for item in args.group or [])
    with opened(settings, images=False) as ctx:
        ctx.auth.add_user(args.name, superuser=args.superuser, roles=roles)
    print(f"user {args.name} created" + (" (system administrator)" if args.superuser else ""))
    return 0


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        users = ctx.auth.list_users()
    rows = [(u.name, "yes" if u.superuser else "no",
             ", ".join(f"{g}:{r}" for g, r in sorted(u.roles.items())) or "-") for u in users]
    print(_table(("USER", "SUPERUSER", "ROLES (GROUP:ROLE)"), rows))
    return 0


def cmd_user_set_role(args: argparse.Namespace, settings: Settings) -> int:
    from .access.auth import parse_membership

    group, role = parse_membership(args.membership)
    with opened(settings, images=False) as ctx:
        ctx.auth.set_role(args.name, group, None if role == ROLE_NONE else role)
    print(f"user {args.name} removed from group {group}" if role == ROLE_NONE
          else f"user {args.name} is {role} in group {group}")
    return 0


def cmd_user_delete(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.delete_user(args.name)
    print(f"user {args.name} deleted; their tokens no longer work")
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        issued = ctx.auth.issue_token(args.name, args.days)
    print(f"token for {issued.user}, id (jti) {issued.jti}, expires {issued.expires}")
    print(issued.display)
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        tokens = ctx.auth.list_tokens(args.name)
    rows = [(t.jti, t.user or "-", format_time(t.issued) if t.issued else "-",
             format_time(t.expires) if t.expires else "-", "yes" if t.revoked else "no") for t in tokens]
    print(_table(("JTI", "USER", "ISSUED", "EXPIRES", "REVOKED"), rows))
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.revoke(args.jti)
    print(f"token {args.jti} revoked")
    return 0


# -- data -------------------------------------------------------------------------------------

def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from .admin.fixtures import load_fixtures, read_fixtures

    data = read_fixtures(args.file)
    with opened(settings, images=False) as ctx:
        report = load_fixtures(ctx.storage, data, ctx.clock)
    print(report)
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .admin.transfer import export_file
    from .builds.files import ImagePaths

    with opened(settings, images=False) as ctx:
        report = export_file(ctx.storage, args.file, ctx.clock, ImagePaths.from_settings(settings))
    print(f"exported {report} from {settings.storage.backend} to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from .admin.transfer import import_file
    from .builds.files import ImagePaths

    with opened(settings, images=False) as ctx:
        report = import_file(ctx.storage, args.file, ImagePaths.from_settings(settings))
    print(f"imported {report} into {settings.storage.backend}")
    return 0


def cmd_images_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Run the retention sweep once; print each image past retention and what happens to it."""
    with opened(settings) as ctx:
        assert ctx.images is not None  # built with images=True
        items = ctx.images.sweep(dry_run=args.dry_run)
    removed = 0
    for item in items:
        verb = ("would remove" if args.dry_run else "removed") if item.removed else "kept"
        removed += item.removed
        img = item.image
        builder_image = f"; builder image {item.builder_image}" if item.builder_image else ""
        print(f"{verb} {img.group}/{img.name}:{img.tag} {img.id} {img.nfs_path}: {item.reason}{builder_image}")
    summary = "would remove" if args.dry_run else "removed"
    print(f"{summary} {removed} image(s); {len(items) - removed} pinned image(s) past retention kept")
    return 0


def cmd_probe(args: argparse.Namespace, settings: Settings) -> int:
    """Probe the selected records now (results are written as a probe round's are) and print
    `group kind name: ONLINE (detail)` / `OFFLINE: reason` / `UNKNOWN: why not probed`."""
    with opened(settings, images=False) as ctx:
        assert ctx.probes is not None
        for outcome in ctx.probes.probe_now(args.kind, args.group, args.name):
            print(outcome.line())
    return 0


# -- the parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpresso-env", description="XPRESSO Environment REST APIs, self-hosted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default: $XPRESSO_ENV_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create or upgrade the storage schema and the token secret")
    p.add_argument("--group", help="also create this group (if missing)")
    p.add_argument("--admin", metavar="NAME", help="also create this system administrator (if missing) and print a token")
    p.set_defaults(handler=cmd_init)

    d = ServerSettings()
    p = sub.add_parser(
        "serve", help="serve the API with waitress",
        description="Serve the API with waitress. Each flag overrides its configuration key; the default "
                    "shown is the built-in one, used when neither the configuration file nor "
                    "XPRESSO_ENV_SERVER_* sets the key.")
    p.add_argument("--host", metavar="ADDRESS",
                   help=f"address to listen on; 0.0.0.0 for every interface (server.host, default {d.host})")
    p.add_argument("--port", type=int, help=f"TCP port to listen on (server.port, default {d.port})")
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"requests handled at once (server.threads, default {d.threads})")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("worker", help="run builds and the retention sweep, without serving HTTP",
                       description="Claim and run image builds from the shared queue, and run the retention "
                                   "sweep, without serving HTTP. Any number of workers and servers may share one "
                                   "storage; `builds.enabled: false` keeps `serve` processes from building.")
    p.add_argument("--concurrency", type=_positive, metavar="N",
                   help="builds run at once (default: builds.max_concurrent)")
    p.set_defaults(handler=cmd_worker)

    group = sub.add_parser("group", help="manage groups").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = group.add_parser("add", help="create a group")
    p.add_argument("name")
    p.set_defaults(handler=cmd_group_add)
    p = group.add_parser("list", help="list groups with their number of members")
    p.set_defaults(handler=cmd_group_list)

    roles = "guest, member, privilege_member, group_admin"
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = user.add_parser("add", help="create a user")
    p.add_argument("name")
    p.add_argument("--superuser", action="store_true", help="a system administrator")
    p.add_argument("--group", action="append", metavar="GROUP:ROLE",
                   help=f"membership, role one of {roles} (repeatable)")
    p.set_defaults(handler=cmd_user_add)
    p = user.add_parser("list", help="list users with their role in each group")
    p.set_defaults(handler=cmd_user_list)
    p = user.add_parser("set-role", help=f"set a user's role in a group; GROUP:{ROLE_NONE} takes them out of it")
    p.add_argument("name")
    p.add_argument("membership", metavar="GROUP:ROLE", help=f"role one of {roles}, or {ROLE_NONE}")
    p.set_defaults(handler=cmd_user_set_role)
    p = user.add_parser("delete", help="delete a user (their tokens stop working)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_user_delete)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = token.add_parser("create", help="issue a token; the last line printed is `Jwt <token>`")
    p.add_argument("name")
    p.add_argument("--days", type=int, help="lifetime (default: auth.token_days)")
    p.set_defaults(handler=cmd_token_create)
    p = token.add_parser("list", help="list issued tokens (of one user): id, user, issued, expires, revoked")
    p.add_argument("name", nargs="?")
    p.set_defaults(handler=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token by its id (jti)")
    p.add_argument("jti")
    p.set_defaults(handler=cmd_token_revoke)

    p = sub.add_parser("load", help="load groups, users, harnesses and engines from a fixtures file")
    p.add_argument("file")
    p.set_defaults(handler=cmd_load)

    p = sub.add_parser("export", help="write everything in storage, and the build logs, to a YAML file "
                                      "(ids and times kept)")
    p.add_argument("file")
    p.set_defaults(handler=cmd_export)
    p = sub.add_parser("import", help="load a file written by `export` into this storage (all or nothing)")
    p.add_argument("file")
    p.set_defaults(handler=cmd_import)

    images = sub.add_parser("images", help="manage built images").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = images.add_parser("sweep", help="remove image tars past retention (images.retention_days), "
                                        "except pinned ones")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed, and why")
    p.set_defaults(handler=cmd_images_sweep)

    p = sub.add_parser("probe", help="probe harnesses and engines now; one line per record with its state")
    p.add_argument("--kind", choices=("harnesses", "engines"), help="only this kind of record")
    p.add_argument("--group", metavar="G", help="only this group's records")
    p.add_argument("name", nargs="?", metavar="NAME", help="only the records with this name")
    p.set_defaults(handler=cmd_probe)
    return parser


def _serve_overrides(args: argparse.Namespace) -> dict:
    if args.command != "serve":
        return {}
    server = {k: v for k, v in (("host", args.host), ("port", args.port), ("threads", args.threads)) if v is not None}
    return {"server": server} if server else {}


def _fail(message: str) -> int:
    print(f"xpresso-env: error: {message}", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = (os.environ.get(LOG_LEVEL_ENV) or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        return _fail(f"environment variable {LOG_LEVEL_ENV}: unknown log level {level!r}; "
                     f"use one of {', '.join(LOG_LEVELS)}")
    configure_logging(level)  # text until the settings say otherwise: their own errors are logged too
    quiet_queue_warnings()
    try:
        settings = load_settings(args.config, overrides=_serve_overrides(args))
        configure_logging(level, settings.server.log_format)
        return args.handler(args, settings) or 0
    except XpressoError as exc:
        return _fail(exc.detail)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get(DEBUG_ENV):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
