"""The `xpresso-env` commands that administer the data (CONTRACT section 5): groups, users,
tokens, fixtures, export and import, the images' retention sweep and probes run now.

Each one opens an application context of its own with the admin role (no background work), does
its one thing and prints what it did.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

from ..config import Settings
from ..core.timeutil import format_time
from ..core.words import count

if TYPE_CHECKING:
    from ..app import AppContext

ROLE_NONE = "none"  # `user set-role NAME GROUP:none` takes NAME out of GROUP


@contextmanager
def opened(settings: Settings, **kwargs) -> Iterator["AppContext"]:
    """An application context for one command (no background work: the admin role), closed at the end."""
    from ..app import Role, build_context

    ctx = build_context(settings, role=Role.ADMIN, **kwargs)
    try:
        yield ctx
    finally:
        ctx.close()


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])


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
    print(text_table(("GROUP", "CREATED", "MEMBERS"), rows))
    return 0


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from ..access.auth import parse_membership

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
    print(text_table(("USER", "SUPERUSER", "ROLES (GROUP:ROLE)"), rows))
    return 0


def cmd_user_set_role(args: argparse.Namespace, settings: Settings) -> int:
    from ..access.auth import parse_membership

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
    print(text_table(("JTI", "USER", "ISSUED", "EXPIRES", "REVOKED"), rows))
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings, images=False) as ctx:
        ctx.auth.revoke(args.jti)
    print(f"token {args.jti} revoked")
    return 0


# -- data -------------------------------------------------------------------------------------

def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from ..admin.fixtures import load_fixtures, read_fixtures

    data = read_fixtures(args.file)
    with opened(settings, images=False) as ctx:
        report = load_fixtures(ctx.storage, data, ctx.clock)
    print(report)
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ..admin.transfer import export_file
    from ..builds.files import ImagePaths

    with opened(settings, images=False) as ctx:
        report = export_file(ctx.storage, args.file, ctx.clock, ImagePaths.from_settings(settings),
                             with_deliveries=args.with_deliveries)
    print(f"exported {report} from {settings.storage.backend} to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from ..admin.transfer import import_file
    from ..builds.files import ImagePaths

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
    print(f"{summary} {count(removed, 'image')}; {count(len(items) - removed, 'pinned image')} past retention kept")
    return 0


def cmd_probe(args: argparse.Namespace, settings: Settings) -> int:
    """Probe the selected records now (results are written as a probe round's are) and print
    `group kind name: ONLINE (detail)` / `OFFLINE: reason` / `UNKNOWN: why not probed`."""
    with opened(settings, images=False) as ctx:
        assert ctx.probes is not None
        for outcome in ctx.probes.probe_now(args.kind, args.group, args.name):
            print(outcome.line())
    return 0
