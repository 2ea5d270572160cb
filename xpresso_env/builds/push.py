"""Registry push (``registry.*``), the service's side: where each build's image goes.

An image ``name:tag`` of group ``G`` goes to ``<host>/<namespace>/<name>:<tag>``, the namespace
being ``registry.namespace`` with ``{group}`` replaced by ``G``, lower-cased (the grammar, which
the configuration checks at load: :mod:`xpresso_env.core.push_address`). A group whose name
renders to an invalid namespace fails that build, saying why (:func:`target_for`). The password
is read from ``registry.password_file`` for each push, into the :class:`PushTarget` the builder
gets; how a builder pushes with it (and checks the registry first) is in the builder SDK,
:mod:`xpresso_env.builds.sdk.push`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..core.push_address import MAX_REPOSITORY, parse_url, render_namespace
from .sdk.push import PushTarget

if TYPE_CHECKING:
    from ..config import RegistrySettings

__all__ = ["PushError", "PushTargets", "target_for"]


class PushError(Exception):
    """A push that cannot happen; the message is the one-line ``meta.error``."""


def target_for(registry: "RegistrySettings", password_file: Optional[Path], group: str, name: str,
               tag: str) -> Optional[PushTarget]:
    """Where ``group``'s ``name:tag`` is pushed, or None without ``registry.url``.

    :param password_file: ``registry.password_file`` resolved against the configuration's folder.
    :raises PushError: the namespace renders invalid for this group, or the password cannot be read.
    """
    if registry.url is None:
        return None
    try:
        address = parse_url(registry.url, registry.insecure)
        namespace = render_namespace(registry.namespace, group)
    except ValueError as exc:
        raise PushError(f"push failed: {exc}") from None
    repository = f"{address.host}/{namespace}/{name}"
    if len(repository) > MAX_REPOSITORY:
        raise PushError(f"push failed: the repository name {repository!r} is longer than {MAX_REPOSITORY} characters")
    password = None
    if registry.username is not None:
        if password_file is None:
            raise PushError("push failed: registry.username is set without registry.password_file")
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise PushError(f"push failed: cannot read registry.password_file {password_file}: {reason}") from None
    return PushTarget(registry=address.host, repository=repository, tag=tag, insecure=registry.insecure,
                      secure_scheme=address.secure, username=registry.username, password=password)


class PushTargets:
    """``registry.*`` as the build queue uses it: where each build's image goes.

    :param registry: the ``registry`` settings.
    :param password_file: ``registry.password_file`` resolved against the configuration's folder.
    """

    def __init__(self, registry: "RegistrySettings", password_file: Optional[Path]):
        self.registry = registry
        self.password_file = password_file

    @property
    def enabled(self) -> bool:
        return self.registry.url is not None

    def target(self, group: str, name: str, tag: str) -> Optional[PushTarget]:
        """:raises PushError: see :func:`target_for`."""
        return target_for(self.registry, self.password_file, group, name, tag)
