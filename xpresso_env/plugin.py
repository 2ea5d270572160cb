"""The plugin manager: built fresh for every application, never global."""
from __future__ import annotations

import importlib
import os
from typing import Any, Iterable, Optional

import pluggy

from . import hookspecs
from .access.providers import IdentityProvider, IdentityProviderInfo, ProviderTools
from .builds.sdk.builder import BuilderInfo
from .config import BLOCK_PLUGINS_ENV
from .core.errors import ConfigError
from .storage import StorageBackendInfo

# The built-in plugins, always registered (third-party ones come from entry points).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "xpresso_env_plugins.storage_sqlite",
    "xpresso_env_plugins.storage_yaml",
    "xpresso_env_plugins.storage_postgres",
    "xpresso_env_plugins.builder_docker",
    "xpresso_env_plugins.builder_buildah",
    "xpresso_env_plugins.builder_dryrun",
    "xpresso_env_plugins.prober_jenkins",
    "xpresso_env_plugins.prober_pyats",
    "xpresso_env_plugins.identity_local",
    "xpresso_env_plugins.identity_ldap",
    "xpresso_env_plugins.identity_header",
)

ENTRY_POINT_GROUP = "xpresso_env"


def make_plugin_manager(extra_plugins: Iterable[object] = (), load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("xpresso_env")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for plugin in extra_plugins:
        pm.register(plugin)
    if load_entry_points:
        for blocked in filter(None, (s.strip() for s in os.environ.get(BLOCK_PLUGINS_ENV, "").split(","))):
            pm.set_blocked(blocked)
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def storage_backends(pm: pluggy.PluginManager) -> dict[str, StorageBackendInfo]:
    return {info.name: info for infos in pm.hook.xpresso_storage_backends() for info in infos}


def builders(pm: pluggy.PluginManager) -> dict[str, BuilderInfo]:
    return {info.name: info for infos in pm.hook.xpresso_builders() for info in infos}


def identity_providers(pm: pluggy.PluginManager) -> dict[str, IdentityProviderInfo]:
    return {info.name: info for infos in pm.hook.xpresso_identity_providers() for info in infos}


def pick_identity_providers(pm: pluggy.PluginManager, names: Iterable[str], tools: ProviderTools) -> list[IdentityProvider]:
    """The providers ``auth.providers`` names, made in that order; an unknown name fails at start-up."""
    found = identity_providers(pm)
    chosen = []
    for name in names:
        if name not in found:
            raise ConfigError(f"auth.providers: unknown identity provider {name!r}; installed: {', '.join(sorted(found))}")
        chosen.append(found[name].factory(tools))
    return chosen


def pick_storage(pm: pluggy.PluginManager, name: str) -> StorageBackendInfo:
    found = storage_backends(pm)
    if name not in found:
        raise ConfigError(f"storage.backend: unknown storage backend {name!r}; installed: {', '.join(sorted(found))}")
    return found[name]


def storage_provider(pm: pluggy.PluginManager, backend: str) -> Optional[str]:
    """The name of the plugin that announces storage backend ``backend``."""
    for impl in pm.hook.xpresso_storage_backends.get_hookimpls():
        if any(info.name == backend for info in impl.function()):
            return impl.plugin_name
    return None


def plugin_list(pm: pluggy.PluginManager, notes: Optional[dict[str, dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Loaded plugins with their versions, for GET /api/v2/plugins; ``notes`` adds keys to the
    entries of the plugins it names (the storage plugin in use says whether the cache runs)."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    from . import __version__

    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        dist = dists.get(id(plugin))
        version = getattr(dist, "version", None) or getattr(plugin, "__version__", None) or __version__
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "version": str(version), "hooks": hooks, **(notes or {}).get(name, {})})
    return out
