"""Subcommands of later features, kept out of cli.py so each lives beside its feature.

``SUBCOMMANDS`` lists functions that add their parsers; cli.build_parser() calls each. (A list
here rather than a registry in cli.py: `python -m xpresso_env.cli` runs cli.py as __main__, a
second module object, which would not see registrations made on xpresso_env.cli.)"""
from __future__ import annotations

import argparse

from .config import Settings


def opened(settings: Settings, **kwargs):
    from .cli import opened as _opened  # the shared helper (imported late: cli imports this module)

    return _opened(settings, **kwargs)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .services.transfer import export_file

    with opened(settings, images=False) as ctx:
        report = export_file(ctx.storage, args.file, ctx.clock)
    print(f"exported {report} from {settings.storage.backend} to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from .services.transfer import import_file

    with opened(settings, images=False) as ctx:
        report = import_file(ctx.storage, args.file)
    print(f"imported {report} into {settings.storage.backend}")
    return 0


def _transfer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write everything in storage to a YAML file (ids and times kept)")
    p.add_argument("file")
    p.set_defaults(handler=cmd_export)
    p = sub.add_parser("import", help="load a file written by `export` into this storage (all or nothing)")
    p.add_argument("file")
    p.set_defaults(handler=cmd_import)


def cmd_images_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Run the retention sweep once; print each image past retention and what happens to it."""
    with opened(settings) as ctx:
        items = ctx.images.sweep(dry_run=args.dry_run)
    removed = 0
    for item in items:
        verb = ("would remove" if args.dry_run else "removed") if item.removed else "kept"
        removed += item.removed
        img = item.image
        print(f"{verb} {img.group}/{img.name}:{img.tag} {img.id} {img.nfs_path}: {item.reason}")
    summary = "would remove" if args.dry_run else "removed"
    print(f"{summary} {removed} image(s); {len(items) - removed} pinned image(s) past retention kept")
    return 0


def _images(sub: argparse._SubParsersAction) -> None:
    images = sub.add_parser("images", help="manage built images").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = images.add_parser("sweep", help="remove image tars past retention (images.retention_days), "
                                        "except pinned ones")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed, and why")
    p.set_defaults(handler=cmd_images_sweep)


SUBCOMMANDS = [_transfer, _images]
