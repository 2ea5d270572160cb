"""Where the client finds its server, token and group.

``xpresso login`` keeps them in ``$XDG_CONFIG_HOME/xpresso/config.yaml`` (``~/.config/...`` when
XDG_CONFIG_HOME is unset), mode 0600 since it holds a token. For each setting the command line
(``--url/--token/--group``) wins over the environment (``XPRESSO_URL``, ``XPRESSO_TOKEN``,
``XPRESSO_GROUP``), which wins over the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import yaml

from .errors import ClientError

ENV = {"url": "XPRESSO_URL", "token": "XPRESSO_TOKEN", "group": "XPRESSO_GROUP"}
_SCHEMES = ("jwt", "bearer")


@dataclass(frozen=True)
class ClientConfig:
    url: Optional[str] = None
    token: Optional[str] = None  # the bare JWT
    group: Optional[str] = None


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "xpresso" / "config.yaml"


def bare_token(text: str) -> str:
    """The JWT from ``Jwt T`` (the last line `xpresso-env token create` prints), ``Bearer T`` or
    ``T``. The command's whole output (``--token "$(xpresso-env token create alice)"``, or both
    lines pasted) is accepted too: its last line is the token."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    parts = lines[-1].split() if lines else []
    if len(parts) == 2 and parts[0].lower() in _SCHEMES:
        return parts[1]
    if len(parts) == 1:
        return parts[0]
    raise ClientError("the token should be `Jwt <token>` or the bare token")


def normal_url(text: str) -> str:
    url = text.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"the server URL must start with http:// or https://, got {text!r}")
    return url


def load_file(path: Path) -> ClientConfig:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return ClientConfig()
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path} is not a mapping of url, token and group")
    return ClientConfig(**{k: (str(data[k]) if data.get(k) is not None else None) for k in ENV})


def save_file(path: Path, config: ClientConfig) -> None:
    """Written to a new 0600 file, then renamed over the old one: the token is never readable by
    others, not even for a moment, and a crash leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # O_CREAT's mode does not apply to a file left from before
        yaml.safe_dump({"url": config.url, "token": config.token, "group": config.group}, fh,
                       default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)


def resolve(flags: Mapping[str, Optional[str]], env: Mapping[str, str], saved: ClientConfig) -> ClientConfig:
    """Flags over environment over the saved file, setting by setting."""
    values = {}
    for key, var in ENV.items():
        value = flags.get(key)
        if value is None:
            value = env.get(var) or None
        if value is None:
            value = getattr(saved, key)
        values[key] = value
    return ClientConfig(url=normal_url(values["url"]) if values["url"] else None,
                        token=bare_token(values["token"]) if values["token"] else None,
                        group=values["group"] or None)
