"""The `xpresso-env` command line (CONTRACT section 5): the parser and the dispatch.

A failing command prints one line on standard error and exits non-zero: never a traceback
(set XPRESSO_ENV_DEBUG=1 to get one). The commands live beside this module: `server` (init,
serve, worker) and `admin` (groups, users, tokens, data, images, probes).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from .. import __version__
from ..config import (
    DEBUG_ENV,
    LOG_LEVEL_ENV,
    PROCESSES_AUTO,
    ServerSettings,
    Settings,
    load_settings,
)
from ..core.errors import SchemaOutdated, XpressoError
from ..http.server import quiet_queue_warnings
from ..runtime.logfmt import configure_logging
from .admin import (
    ROLE_NONE,
    cmd_export,
    cmd_group_add,
    cmd_group_list,
    cmd_images_sweep,
    cmd_import,
    cmd_load,
    cmd_probe,
    cmd_token_create,
    cmd_token_list,
    cmd_token_revoke,
    cmd_user_add,
    cmd_user_delete,
    cmd_user_list,
    cmd_user_set_role,
)
from .identity import add_parsers as add_identity_parsers
from .server import cmd_init, cmd_serve, cmd_worker, serve_overrides
from .store import outdated, require_store

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace, Settings], Optional[int]]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# -- the parser -------------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _processes(text: str) -> int | str:
    if text.strip().lower() == PROCESSES_AUTO:
        return PROCESSES_AUTO
    return _positive(text)


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
                   help=f"requests handled at once, shared among the processes (server.threads, default "
                        f"{d.threads})")
    p.add_argument("--processes", type=_processes, metavar="N",
                   help=f"processes serving the port, or {PROCESSES_AUTO} for one per CPU (server.processes, "
                        f"default {d.processes}); with more than one, SIGHUP reloads without dropping a request")
    # Given by the supervisor to the processes it starts (CONTRACT section 15), not by people.
    p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--status-file", help=argparse.SUPPRESS)
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
    add_identity_parsers(sub, user)  # user set-password, audit (cli/identity.py)

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
    p.add_argument("--with-deliveries", action="store_true",
                   help="also export webhook deliveries and the outbox still to deliver (left out by default)")
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


def _fail(message: str) -> int:
    print(f"xpresso-env: error: {message}", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve --processes` starts processes with them
    level = (os.environ.get(LOG_LEVEL_ENV) or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        return _fail(f"environment variable {LOG_LEVEL_ENV}: unknown log level {level!r}; "
                     f"use one of {', '.join(LOG_LEVELS)}")
    configure_logging(level)  # text until the settings say otherwise: their own errors are logged too
    quiet_queue_warnings()
    try:
        settings = load_settings(args.config, overrides=serve_overrides(args))
        configure_logging(level, settings.server.log_format)
        if args.command != "init":
            require_store(settings)  # only init creates a store
        return args.handler(args, settings) or 0
    except SchemaOutdated as exc:
        return _fail(outdated(settings, exc.detail))
    except XpressoError as exc:
        return _fail(exc.detail)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get(DEBUG_ENV):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc}")
