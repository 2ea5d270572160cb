"""Where the command line's store is, and the rule that only `init` creates one.

Before this rule `xpresso-env group list` in an empty folder made `var/xpresso.sqlite3` there and
then said "run `xpresso-env init`" without a path: following the advice in another folder made a
second, empty store. Now every command but `init` first checks that the store it would open
exists, and says which configuration file and which store it looked at, and how to point
elsewhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import CONFIG_ENV, Settings
from ..core.errors import ConfigError
from ..runtime.redact import redact

# The backends that keep their store in one file (the default name under var/ when
# storage.path is not set); any other backend's store is not ours to look for.
FILE_STORES = {"sqlite": "xpresso.sqlite3", "yaml": "xpresso.yaml"}
POINT_ELSEWHERE = (f"point elsewhere with --config FILE, ${CONFIG_ENV} or $XPRESSO_ENV_STORAGE_PATH "
                   "(or $XPRESSO_ENV_STORAGE_DSN)")


def store_file(settings: Settings) -> Optional[Path]:
    default = FILE_STORES.get(settings.storage.backend)
    return settings.storage_path(default) if default else None


def store_location(settings: Settings) -> str:
    """The store as a person reads it: the file's path, or the (redacted) DSN."""
    path = store_file(settings)
    if path is not None:
        return str(path)
    return redact(settings.storage.dsn or "") or "(no storage.dsn)"


def config_described(settings: Settings) -> str:
    if settings.source:
        return f"configuration {settings.source}"
    return (f"configuration: none (no --config, ${CONFIG_ENV} unset: the built-in defaults, relative to "
            f"{settings.base_dir})")


def require_store(settings: Settings) -> None:
    """Refuse (one line) when the file store this command would open does not exist."""
    path = store_file(settings)
    if path is not None and not path.exists():
        raise ConfigError(f"no {settings.storage.backend} store at {path}; {config_described(settings)}. "
                          f"Create it with `xpresso-env init`, or {POINT_ELSEWHERE}")


def outdated(settings: Settings, detail: str) -> str:
    """A schema error, with where the store is and how to point elsewhere."""
    return (f"{detail.rstrip('.')}; store {store_location(settings)}; {config_described(settings)}. "
            f"Or {POINT_ELSEWHERE}")
