"""The command line of `xpresso` (``build_parser``): its commands, options and help."""
from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from .completion import SHELLS

KINDS = {"harnesses": "harness", "engines": "engine"}
IMAGE_REF = "IMAGE"
IMAGE_REF_HELP = "the image's id, its first 4 or more characters, or NAME:TAG"


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (`xpresso --json images list` or
    `xpresso images list --json`); SUPPRESS keeps a subcommand from resetting what was given first."""
    p = argparse.ArgumentParser(add_help=False, parents=[_flags()])
    p.add_argument("--url", default=argparse.SUPPRESS, help="server URL (else $XPRESSO_URL, else the login file)")
    p.add_argument("--token", default=argparse.SUPPRESS, help="token, `Jwt …` or bare (else $XPRESSO_TOKEN ...)")
    p.add_argument("--group", default=argparse.SUPPRESS, help="group (else $XPRESSO_GROUP ...)")
    return p


def _flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's records as JSON")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors")
    return p


def _list_options(p: argparse.ArgumentParser, fields: str, deleted: bool = True, limit: bool = True) -> None:
    """The options every list takes: ``-f FIELD=VALUE`` (repeatable), and where the list has
    them, ``--deleted`` and ``--limit``."""
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"only records whose FIELD equals VALUE; repeatable ({fields})")
    if deleted:
        p.add_argument("--deleted", action="store_true", help="deleted records too (marked as deleted)")
    if limit:
        p.add_argument("--limit", type=int, help="at most this many records")


def _registry_commands(sub: Any, common: argparse.ArgumentParser, kind: str) -> None:
    label = KINDS[kind]
    p = sub.add_parser(kind, help=f"{kind}: list, show, add, edit, rm, history, state")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", parents=[common], help=f"the group's {kind}")
    _list_options(ls, "name, site, bldg, configuration_state, operational_state, ...")
    for action, text in (("show", "one record"), ("rm", "soft-delete"), ("history", "changes and state events"),
                         ("state", "operational state and last probe")):
        c = cmds.add_parser(action, parents=[common], help=f"{label}: {text}")
        c.add_argument("ref", metavar="NAME|ID")
        if action == "history":
            _list_options(c, "at, event, by, reason", deleted=False)
    add = cmds.add_parser("add", parents=[common], help=f"create a {label}")
    add.add_argument("name", metavar="NAME")
    edit = cmds.add_parser("edit", parents=[common], help=f"change a {label}")
    edit.add_argument("ref", metavar="NAME|ID")
    edit.add_argument("--name", dest="new_name", help="rename")
    for c in (add, edit):
        c.add_argument("--config-state", dest="configuration_state", choices=["ENABLED", "DISABLED", "MAINTENANCE"])
        c.add_argument("--site")
        c.add_argument("--bldg")
        if kind == "harnesses":
            c.add_argument("--path", required=c is add, help="absolute path of the installation")
            c.add_argument("--harness", choices=["pyATS", "Tcl-ATS"])
            c.add_argument("--supporting-path", dest="supporting_path")
        else:
            c.add_argument("--base-url", dest="base_url", required=c is add)
            c.add_argument("--type", choices=["jenkins", "cloud"])
            c.add_argument("--username", help="Jenkins user (write-only)")
            c.add_argument("--api-token", dest="api_token", help="Jenkins API token (write-only)")
        c.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="any other field (true/false/null are JSON)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="xpresso", parents=[common],
                                     description="The command line of an xpresso-env server (HTTP only).")
    parser.add_argument("--version", action="version", version=f"xpresso {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    login = sub.add_parser("login", parents=[_flags()], help="sign in and keep the server URL, token and group",
                           description="Keep the server URL, an API token and a group in the client's file. "
                                       "With --user, the password is asked (or read from standard input with "
                                       "--password-stdin), the client signs in and keeps an API token it creates "
                                       "for itself, named after this host: never the password. A user of several "
                                       "groups who names none is asked which (on a terminal) or told to name one.")
    login.add_argument("server", metavar="URL")
    how = login.add_mutually_exclusive_group(required=True)
    how.add_argument("--token", dest="login_token", metavar="T", help="a token as `xpresso-env token create` prints it")
    how.add_argument("--user", dest="login_user", metavar="NAME", help="sign in with this user's password")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--days", type=int, metavar="N", help="with --user: the API token's lifetime in days "
                                                              "(default: the server's)")
    login.add_argument("--group", dest="login_group", metavar="G", help="the group commands are for (asked when "
                                                                        "you are in several and name none)")

    sub.add_parser("whoami", parents=[common], help="who the token belongs to, groups and permissions")
    for kind in KINDS:
        _registry_commands(sub, common, kind)

    images = sub.add_parser("images", help="images: list, show, pin, unpin, rm")
    icmds = images.add_subparsers(dest="action", metavar="ACTION", required=True)
    ils = icmds.add_parser("list", parents=[common], help="images visible in the group")
    for field in ("name", "tag", "status"):
        ils.add_argument(f"--{field}", help=f"the same as -f {field}=VALUE")
    ils.add_argument("--ref", dest="git_ref", help="the same as -f git_ref=VALUE")
    _list_options(ils, "name, tag, status, git_ref")
    for action, text in (("show", "one image"), ("pin", "keep against retention"), ("unpin", "allow retention"),
                         ("rm", "delete (cancels a running build)")):
        c = icmds.add_parser(action, parents=[common], help=text)
        c.add_argument("image", metavar=IMAGE_REF, help=IMAGE_REF_HELP)

    build = sub.add_parser("build", parents=[common], help="build a Polaris image")
    build.add_argument("image", metavar="NAME:TAG")
    build.add_argument("--ref", required=True, help="git ref or commit of the Polaris repository")
    build.add_argument("--base", help="ref merged in before building")
    build.add_argument("--group-share", action="append", default=[], metavar="G", help="also visible in group G")
    _follow_options(build)

    logs = sub.add_parser("logs", parents=[common], help="a build's log")
    logs.add_argument("image", metavar=IMAGE_REF, help=IMAGE_REF_HELP)
    _follow_options(logs)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a running build")
    cancel.add_argument("image", metavar=IMAGE_REF, help=IMAGE_REF_HELP)

    tokens = sub.add_parser("tokens", help="your API tokens: list, create, revoke")
    tcmds = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    tls = tcmds.add_parser("list", parents=[common], help="your tokens (never the tokens themselves)")
    _list_options(tls, "name, typ, revoked, ...", deleted=False)
    tnew = tcmds.add_parser("create", parents=[common], help="a new API token, printed once as its last line")
    tnew.add_argument("name", metavar="NAME")
    tnew.add_argument("--days", type=int, metavar="N", help="lifetime in days (default: the server's)")
    trm = tcmds.add_parser("revoke", parents=[common], help="revoke one of your tokens by its id (jti)")
    trm.add_argument("jti", metavar="JTI")

    completion = sub.add_parser("completion", help="print a shell completion script",
                                description='Print a completion script: eval "$(xpresso completion bash)" in '
                                            '~/.bashrc, or eval "$(xpresso completion zsh)" in ~/.zshrc.')
    completion.add_argument("shell", choices=SHELLS)
    return parser


def _follow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow", action="store_true", help="stream the log until the build ends; "
                                                         "exit 0 only when it ends successful")
    p.add_argument("--cancel-on-interrupt", action="store_true",
                   help="Ctrl-C while following cancels the build without asking")
