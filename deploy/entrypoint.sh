#!/bin/sh
# Container entry point of the xpresso-env image.
#
#   (no arguments) | serve [FLAGS] | worker [FLAGS] | --FLAG ...
#       `xpresso-env init` first (idempotent: creates or upgrades the schema, creates the token
#       secret), then `exec xpresso-env serve|worker ...`: the server replaces this shell, so
#       `docker stop`'s SIGTERM reaches it and running builds are handed back cleanly.
#       On the very first start (the schema was just created), XPRESSO_INIT_ADMIN=NAME also
#       creates that system administrator (and the group XPRESSO_INIT_GROUP, default "admins")
#       and prints their token in the container's log; later starts never issue another one.
#   another xpresso-env subcommand (token create NAME, user list, ...): runs it.
#   an executable (sh, python ...): runs it as it is.
set -eu

if [ "$#" -eq 0 ]; then
    set -- serve
fi
case "$1" in
    -*) set -- serve "$@" ;;  # `docker run IMAGE --threads 16`: flags for serve
esac

case "$1" in
    serve|worker)
        if [ "${XPRESSO_SKIP_INIT:-}" != 1 ]; then
            report=$(xpresso-env init)
            echo "$report"
            case "$report" in
                *"(created)"*)
                    if [ -n "${XPRESSO_INIT_ADMIN:-}" ]; then
                        xpresso-env init --group "${XPRESSO_INIT_GROUP:-admins}" --admin "$XPRESSO_INIT_ADMIN"
                    fi ;;
            esac
        fi
        exec xpresso-env "$@" ;;
esac

# xpresso-env's own subcommands come first: `init` is also an executable in many images
# (/sbin/init, busybox). The CLI's parser says which names are subcommands.
is_subcommand() {
    python -c '
import argparse, sys
from xpresso_env.cli import build_parser
subparsers = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
sys.exit(0 if sys.argv[1] in subparsers[0].choices else 1)' "$1"
}

# An executable file, given by path or found on PATH. PATH is searched here rather than with
# `command -v`, which also names shell builtins (`export`) and, in busybox's sh, its applets.
is_executable() {
    case "$1" in
        */*) [ -f "$1" ] && [ -x "$1" ]; return ;;
    esac
    saved_ifs=$IFS
    IFS=:
    for dir in $PATH; do
        if [ -f "${dir:-.}/$1" ] && [ -x "${dir:-.}/$1" ]; then
            IFS=$saved_ifs
            return 0
        fi
    done
    IFS=$saved_ifs
    return 1
}

if ! is_subcommand "$1" && is_executable "$1"; then
    exec "$@"
fi
exec xpresso-env "$@"  # a subcommand, or xpresso-env's own error listing the subcommands
