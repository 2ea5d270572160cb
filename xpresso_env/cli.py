"""The `xpresso-env` command line (CONTRACT section 5).

A failing command prints one line on standard error and exits non-zero: never a traceback
(set XPRESSO_ENV_DEBUG=1 to get one).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

from .config import Settings, load_settings
from .errors import BadRequest, XpressoError

log = logging.getLogger("xpresso_env.cli")

Handler = Callable[[argparse.Namespace, Settings], Optional[int]]


@contextmanager
def opened(settings: Settings, **kwargs) -> Iterator:
    """An application context for one command, closed at the end."""
    from .app import build_context

    ctx = build_context(settings, **kwargs)
    try:
        yield ctx
    finally:
        ctx.close()


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from .plugin import make_plugin_manager, pick_storage
    from .services.auth import load_secret

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
    print(f"storage {settings.storage.backend} at {_redact(str(where))}: schema version {after} ({change})")
    if args.group or args.admin:
        _first_admin(args, settings)
    return 0


def _first_admin(args: argparse.Namespace, settings: Settings) -> None:
    """`init --group G --admin NAME`: a first group and system administrator, and their token."""
    from .errors import AlreadyExists

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


def _redact(text: str) -> str:
    """Hide a password in a DSN before printing it."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", re.sub(r"(password=)\S+", r"\1***", text))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import waitress

    from .app import build_context, create_wsgi_app

    ctx = build_context(settings)
    ctx.start()
    app = create_wsgi_app(ctx)
    s = settings.server
    log.info("xpresso-env serving on http://%s:%s/ (storage %s, %s threads)", s.host, s.port,
             settings.storage.backend, s.threads)
    # waitress ignores SIGTERM; turn it into a clean exit so running builds are handed back.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        waitress.serve(app, host=s.host, port=s.port, threads=s.threads, ident="xpresso-env",
                       max_request_body_size=max(s.max_body_bytes * 2, 1 << 20), _quiet=True)
    finally:
        ctx.close()
    return 0


def _exit_on_signal(signum, frame) -> None:
    log.info("signal %s: stopping", signum)
    raise SystemExit(0)


def cmd_group_add(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.add_group(args.name)
    print(f"group {args.name} created")
    return 0


def _parse_memberships(items: Sequence[str]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for item in items:
        group, sep, role = item.rpartition(":")
        if not sep or not group or not role:
            raise BadRequest(f"--group takes GROUP:ROLE, got {item!r}")
        roles[group] = role
    return roles


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.add_user(args.name, superuser=args.superuser, roles=_parse_memberships(args.group or []))
    print(f"user {args.name} created" + (" (system administrator)" if args.superuser else ""))
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


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.revoke(args.jti)
    print(f"token {args.jti} revoked")
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from .services.fixtures import load_fixtures, read_fixtures

    data = read_fixtures(args.file)
    with opened(settings, images=False) as ctx:
        report = load_fixtures(ctx.storage, data, ctx.clock)
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpresso-env", description="XPRESSO Environment REST APIs, self-hosted.")
    parser.add_argument("--config", help="configuration file (default: $XPRESSO_ENV_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create or upgrade the storage schema and the token secret")
    p.add_argument("--group", help="also create this group (if missing)")
    p.add_argument("--admin", metavar="NAME", help="also create this system administrator (if missing) and print a token")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("serve", help="serve the API with waitress")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--threads", type=int)
    p.set_defaults(handler=cmd_serve)

    group = sub.add_parser("group", help="manage groups").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = group.add_parser("add", help="create a group")
    p.add_argument("name")
    p.set_defaults(handler=cmd_group_add)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = user.add_parser("add", help="create a user")
    p.add_argument("name")
    p.add_argument("--superuser", action="store_true", help="a system administrator")
    p.add_argument("--group", action="append", metavar="GROUP:ROLE",
                   help="membership, role one of guest, member, privilege_member, group_admin (repeatable)")
    p.set_defaults(handler=cmd_user_add)
    p = user.add_parser("delete", help="delete a user (their tokens stop working)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_user_delete)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = token.add_parser("create", help="issue a token; the last line printed is `Jwt <token>`")
    p.add_argument("name")
    p.add_argument("--days", type=int)
    p.set_defaults(handler=cmd_token_create)
    p = token.add_parser("revoke", help="revoke a token by its id (jti)")
    p.add_argument("jti")
    p.set_defaults(handler=cmd_token_revoke)

    p = sub.add_parser("load", help="load groups, users, harnesses and engines from a fixtures file")
    p.add_argument("file")
    p.set_defaults(handler=cmd_load)

    from .cli_extra import SUBCOMMANDS

    for extend in SUBCOMMANDS:
        extend(sub)
    return parser


def _serve_overrides(args: argparse.Namespace) -> dict:
    server = {k: getattr(args, k) for k in ("host", "port", "threads") if getattr(args, k, None) is not None}
    return {"server": server} if server else {}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("XPRESSO_ENV_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(args.config, overrides=_serve_overrides(args))
        return args.handler(args, settings) or 0
    except XpressoError as exc:
        print(f"xpresso-env: error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("XPRESSO_ENV_DEBUG"):
            raise
        print(f"xpresso-env: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
