"""How the settings load: defaults < YAML file < XPRESSO_ENV_* env < CLI flags, each value coerced
to its key's type, then checked as a whole."""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

from ..core.errors import ConfigError
from ..core.push_address import MAX_REPOSITORY, SAMPLE_GROUP, parse_url, render_namespace
from .sections import (CONFIG_ENV, ENV_PREFIX, OTHER_ENV, PROCESSES_AUTO, ProcessCount, RegistrySettings,
                       Settings)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, where: str, from_text: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and str(value).strip().lower() in ("", "null", "none")):
            return None
        return _coerce(args[0], value, where, from_text)
    if value is None:
        raise ConfigError(f"{where}: a value is required")
    if tp is ProcessCount:
        return _process_count(value, where)
    if origin is tuple:  # a list of strings: a YAML list, or comma-separated text
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(str, v, where, from_text) for v in value)
    if origin is dict:  # a mapping of strings to lists of strings (YAML, or YAML text in the environment)
        if from_text and isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"{where}: expected a mapping, got {value!r}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        inner = typing.get_args(tp)[1]
        return {_coerce(str, k, where, from_text): _coerce(inner, v, f"{where}.{k}", from_text)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if from_text:
            try:
                return int(str(value).strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(str(value).strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str) and value != "":
            return value
        if from_text and str(value) != "":
            return str(value)
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _process_count(value: Any, where: str) -> ProcessCount:
    if isinstance(value, str) and value.strip().lower() == PROCESSES_AUTO:
        return ProcessCount(os.cpu_count() or 1)
    try:
        count = int(str(value).strip()) if not isinstance(value, bool) else 0
    except ValueError:
        count = 0
    if count <= 0:
        raise ConfigError(f"{where}: expected a positive integer or {PROCESSES_AUTO}, got {value!r}")
    return ProcessCount(count)


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _merge_section(cls: type, current: Any, data: Any, source: str, prefix: str = "") -> Any:
    """``data`` (from ``source``: a file, or "command line") merged into the section ``current``
    found at the dotted key ``prefix``."""
    if not isinstance(data, Mapping):
        at = f"{source}: {prefix}" if prefix else source
        raise ConfigError(f"{at}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.compare}
    changes = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            hint = _hint(str(key), known) or f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"{source}: {dotted}: unknown key{hint}")
        tp = hints[key]
        if _is_section(tp):
            changes[key] = _merge_section(tp, getattr(current, key), value, source, dotted)
        else:
            changes[key] = _coerce(tp, value, f"{source}: {dotted}", from_text=False)
    return dataclasses.replace(current, **changes)


def _env_names(cls: type, prefix: str) -> set[str]:
    """Every XPRESSO_ENV_* variable that names a setting."""
    hints = typing.get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.compare:
            name = f"{prefix}_{f.name.upper()}"
            names |= _env_names(hints[f.name], name) if _is_section(hints[f.name]) else {name}
    return names


def _check_env_names(env: Mapping[str, str]) -> None:
    known = _env_names(Settings, ENV_PREFIX.rstrip("_")) | OTHER_ENV
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            raise ConfigError(f"environment variable {name}: unknown setting{_hint(name, known)}")


def _env_overrides(cls: type, current: Any, env: Mapping[str, str], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    changes = {}
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        name = f"{prefix}_{f.name.upper()}"
        tp = hints[f.name]
        if _is_section(tp):
            changes[f.name] = _env_overrides(tp, getattr(current, f.name), env, name)
        elif name in env:
            changes[f.name] = _coerce(tp, env[name], f"environment variable {name}", from_text=True)
    return dataclasses.replace(current, **changes)


def yaml_error_line(file: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, the line and column (1-based) and what is wrong, instead of
    PyYAML's several lines about ``"<unicode string>"``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = " ".join(str(getattr(exc, "context", None) or "").split())
    what = f"{problem} ({context})" if context else problem
    if mark is None:
        return f"{file}: not valid YAML: {what}"
    return f"{file}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what}"


def load_settings(path: Optional[str | os.PathLike] = None,
                  env: Optional[Mapping[str, str]] = None,
                  overrides: Optional[Mapping[str, Any]] = None) -> Settings:
    """Build Settings. ``path`` falls back to $XPRESSO_ENV_CONFIG; ``overrides`` is a nested dict
    (as from CLI flags) applied last."""
    env = os.environ if env is None else env
    _check_env_names(env)
    path = path or env.get(CONFIG_ENV) or None
    settings = Settings(base_dir=os.getcwd())
    if path:
        file = Path(path).expanduser().resolve()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_line(file, exc)) from None
        settings = dataclasses.replace(settings, base_dir=str(file.parent), source=str(file))
        settings = _merge_section(Settings, settings, data, str(file))
    settings = _env_overrides(Settings, settings, env, ENV_PREFIX.rstrip("_"))
    if overrides:
        settings = _merge_section(Settings, settings, overrides, "command line")
    _check_values(settings)
    return settings


def _check_values(s: Settings) -> None:
    where = s.source or "configuration"
    positive = {
        "storage.pool_max": s.storage.pool_max, "storage.statement_timeout_s": s.storage.statement_timeout_s,
        "storage.connect_timeout_s": s.storage.connect_timeout_s, "images.retention_days": s.images.retention_days + 1,
        "builds.max_concurrent": s.builds.max_concurrent, "builds.timeout_s": s.builds.timeout_s,
        "builds.max_queued_per_group": s.builds.max_queued_per_group, "builds.poll_s": s.builds.poll_s,
        "server.port": s.server.port, "server.threads": s.server.threads,
        "server.max_body_bytes": s.server.max_body_bytes, "auth.token_days": s.auth.token_days,
        "server.connection_limit": s.server.connection_limit, "server.channel_timeout_s": s.server.channel_timeout_s,
        "server.cleanup_interval_s": s.server.cleanup_interval_s, "server.drain_s": s.server.drain_s,
        "events.timeout_s": s.events.timeout_s, "events.retry_base_s": s.events.retry_base_s,
        "events.max_attempts": s.events.max_attempts, "events.concurrency": s.events.concurrency,
        "events.poll_s": s.events.poll_s, "events.lease_s": s.events.lease_s,
        "events.max_webhooks_per_group": s.events.max_webhooks_per_group,
        "events.deliveries_retention_days": s.events.deliveries_retention_days,
        "events.sweep_interval_s": s.events.sweep_interval_s,
        "history.retention_days": s.history.retention_days,
        "history.sweep_interval_s": s.history.sweep_interval_s,
        "probes.interval_s": s.probes.interval_s, "probes.timeout_s": s.probes.timeout_s,
        "probes.concurrency": s.probes.concurrency, "probes.fail_after": s.probes.fail_after,
        "probes.ok_after": s.probes.ok_after, "probes.lease_s": s.probes.lease_s, "probes.sync_s": s.probes.sync_s,
        "probes.max_body_bytes": s.probes.max_body_bytes,
        "auth.session_hours": s.auth.session_hours, "auth.token_days_max": s.auth.token_days_max,
        "auth.login_max_failures": s.auth.login_max_failures, "auth.login_window_s": s.auth.login_window_s,
        "auth.password_time_cost": s.auth.password_time_cost, "auth.password_memory_kib": s.auth.password_memory_kib,
        "auth.ldap.connect_timeout_s": s.auth.ldap.connect_timeout_s, "auth.ldap.timeout_s": s.auth.ldap.timeout_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: {key}: must be positive")
    if s.server.response_cache_bytes < 0:
        raise ConfigError(f"{where}: server.response_cache_bytes: must be 0 (off) or positive")
    if s.server.port > 65535:
        raise ConfigError(f"{where}: server.port: must be at most 65535")
    if s.server.log_format not in ("text", "json"):
        raise ConfigError(f"{where}: server.log_format: must be text or json, got {s.server.log_format!r}")
    _check_registry_and_network(s, where)


def _check_registry(registry: RegistrySettings) -> None:
    """Load-time checks of ``registry.*`` (its grammar: core/push_address.py, which the build side
    uses too); raises ValueError naming the key."""
    if registry.url is None:
        return
    address = parse_url(registry.url, registry.insecure)
    render_namespace(registry.namespace, SAMPLE_GROUP)
    if (registry.username is None) != (registry.password_file is None):
        raise ValueError("registry.username and registry.password_file go together: set both or neither")
    if len(address.host) + len(registry.namespace) > MAX_REPOSITORY:
        raise ValueError("registry.url and registry.namespace make repository names longer than 255 characters")


def _check_registry_and_network(s: Settings, where: str) -> None:
    try:
        _check_registry(s.registry)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    b = s.builder.buildah
    if b.network not in (None, "host") and b.isolation == "chroot":
        raise ConfigError(f"{where}: builder.buildah.network: {b.network!r} needs builder.buildah.isolation: oci "
                          f"(chroot isolation always shares the host's network)")


def settings_as_dict(s: Settings) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    out.pop("base_dir", None)
    out.pop("source", None)
    return out
