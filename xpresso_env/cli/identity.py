"""The `xpresso-env` commands of signing in (CONTRACT section 13): `user set-password NAME`
(prompts twice, or reads one line with --stdin) and `audit` (the audit, newest first)."""
from __future__ import annotations

import argparse
import getpass
import sys

from ..config import Settings
from ..core.errors import BadRequest
from ..core.timeutil import format_time
from .admin import opened, text_table


def _read_password(args: argparse.Namespace) -> str:
    if args.stdin:
        line = sys.stdin.readline()
        if not line:
            raise BadRequest("--stdin: no password on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass(f"New password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise BadRequest("the two passwords differ; nothing changed")
    return first


def cmd_user_set_password(args: argparse.Namespace, settings: Settings) -> int:
    from ..access.audit import CLI

    password = _read_password(args)
    with opened(settings, images=False) as ctx:
        assert ctx.profile is not None
        ctx.profile.set_password(args.name, password, by=CLI)
    print(f"password of {args.name} set")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        assert ctx.audit is not None
        rows = ctx.audit.entries(user=args.user, event=args.event)
    if args.limit is not None:
        rows = rows[:args.limit]
    print(text_table(("AT", "EVENT", "USER", "BY", "ADDRESS", "DETAIL"),
                 [(format_time(r.date_created), r.event, r.user, r.by or "-", r.address or "-", r.detail or "-")
                  for r in rows]))
    return 0


def add_parsers(sub: argparse._SubParsersAction, user: argparse._SubParsersAction) -> None:
    """``user``: the `user` command's subparsers (set-password joins them)."""
    p = user.add_parser("set-password", help="set a user's password for the local provider (prompts twice)")
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    p.set_defaults(handler=cmd_user_set_password)
    p = sub.add_parser("audit", help="the audit, newest first: sign-ins, lockouts, tokens, passwords, roles")
    p.add_argument("--user", help="only rows about this user")
    p.add_argument("--event", help="only this event (login, login_failed, login_locked, logout, token_created, "
                                   "token_revoked, password_changed, role_changed)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    p.set_defaults(handler=cmd_audit)
