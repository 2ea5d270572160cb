"""Records: frozen dataclasses, UUID ids, timezone-aware UTC times, enums for states.

Storage keeps each record as a JSON-able body (see ``codec.py``); the wire shapes (keys, v1
names) are written once in ``wire.py`` and rendered by ``render.py``.
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Optional


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class ConfigurationState(StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    MAINTENANCE = "MAINTENANCE"


class OperationalState(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class HarnessType(StrEnum):
    PYATS = "pyATS"
    TCL_ATS = "Tcl-ATS"


class EngineType(StrEnum):
    JENKINS = "jenkins"
    CLOUD = "cloud"


class ImageStatus(StrEnum):
    BUILDING = "building"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(StrEnum):
    GUEST = "guest"
    MEMBER = "member"
    PRIVILEGE_MEMBER = "privilege_member"
    GROUP_ADMIN = "group_admin"


# Each role holds the permissions of the roles below it plus its own (CONTRACT section 2).
_OWN_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.GUEST: frozenset(),
    Role.MEMBER: frozenset({"add_docker_image"}),
    Role.PRIVILEGE_MEMBER: frozenset({"add_harness", "change_harness", "add_engine", "change_engine",
                                      "delete_docker_image"}),
    Role.GROUP_ADMIN: frozenset({"delete_harness", "delete_engine", "manage_group"}),
}
ROLE_ORDER: tuple[Role, ...] = (Role.GUEST, Role.MEMBER, Role.PRIVILEGE_MEMBER, Role.GROUP_ADMIN)


def role_permissions(role: Role) -> frozenset[str]:
    held: set[str] = set()
    for r in ROLE_ORDER[: ROLE_ORDER.index(role) + 1]:
        held |= _OWN_PERMISSIONS[r]
    return frozenset(held)


ALL_PERMISSIONS: frozenset[str] = role_permissions(Role.GROUP_ADMIN)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


@dataclass(frozen=True)
class Group:
    KIND: ClassVar[str] = "group"
    name: str
    date_created: datetime

    @property
    def id(self) -> str:
        return self.name


@dataclass(frozen=True)
class User:
    KIND: ClassVar[str] = "user"
    name: str
    date_created: datetime
    superuser: bool = False
    roles: dict[str, Role] = field(default_factory=dict)  # group name -> role, given by hand
    deleted: bool = False
    # The stable identity (CONTRACT section 16): a name added again after a delete is a new uid,
    # and a token binds to the uid, so the old tokens stay dead.
    uid: str = ""
    email: Optional[str] = None
    last_login: Optional[datetime] = None
    preferences: dict[str, str] = field(default_factory=dict)  # time_zone, time_format
    provider: str = "local"  # the identity provider that created the user (local: by hand)
    # The local provider's password: an argon2id hash with its parameters; never the password.
    password: Optional[str] = field(default=None, repr=False)
    # Roles a directory's groups give (auth.ldap.group_roles), rewritten at each sign-in and kept
    # apart from ``roles``, which a sign-in never touches.
    directory_roles: dict[str, Role] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name

    @property
    def memberships(self) -> dict[str, Role]:
        """Every group the user is in, with the higher of the hand-given and directory roles."""
        merged = dict(self.roles)
        for group, role in self.directory_roles.items():
            if group not in merged or ROLE_ORDER.index(role) > ROLE_ORDER.index(merged[group]):
                merged[group] = role
        return merged

    def role_in(self, group: str) -> Optional[Role]:
        hand, directory = self.roles.get(group), self.directory_roles.get(group)
        if hand is None or directory is None:
            return hand or directory
        return max(hand, directory, key=ROLE_ORDER.index)


@dataclass(frozen=True)
class Revocation:
    """A revoked token, by its ``jti``."""

    KIND: ClassVar[str] = "revocation"
    jti: str
    date_created: datetime
    user: Optional[str] = None

    @property
    def id(self) -> str:
        return self.jti


@dataclass(frozen=True)
class TokenRecord:
    """An issued token's bookkeeping for `token list`: never the token itself."""

    KIND: ClassVar[str] = "token"
    id: str  # the token's jti
    user: str
    date_created: datetime  # issued
    expires: datetime
    user_id: str = ""  # the owner's User.uid ("" only in a store not yet upgraded)
    name: str = ""  # what its owner called it (POST /api/v2/me/tokens); "" for `token create`
    typ: str = "api"  # api | session (POST /api/v2/auth/login)
    last_used: Optional[datetime] = None  # updated at most once a minute per process


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit (CONTRACT section 13)."""

    KIND: ClassVar[str] = "audit"
    id: str
    date_created: datetime  # "at" on the wire
    event: str
    user: str  # whom it is about
    by: str  # who did it ("" when nobody signed in: a failed sign-in)
    address: str  # the client's address, "" from the command line
    detail: str = ""


@dataclass(frozen=True)
class LoginFailures:
    """Recent failed sign-ins of one user name (unix times within ``auth.login_window_s``): in
    storage, so every process counts the same failures."""

    KIND: ClassVar[str] = "login_failures"
    name: str  # the user name tried (it may name no user)
    times: list[float]
    date_created: datetime

    @property
    def id(self) -> str:
        return self.name


@dataclass(frozen=True)
class Harness:
    KIND: ClassVar[str] = "harness"
    id: uuid.UUID
    group: str
    name: str
    harness: HarnessType
    path: str
    created_by: str
    date_created: datetime
    date_modified: datetime
    supporting_path: str = ""
    configuration_state: ConfigurationState = ConfigurationState.ENABLED
    operational_state: OperationalState = OperationalState.UNKNOWN
    site: str = ""
    bldg: str = ""
    support_liveview: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class Engine:
    KIND: ClassVar[str] = "engine"
    id: uuid.UUID
    group: str
    name: str
    type: EngineType
    base_url: str
    created_by: str
    date_created: datetime
    date_modified: datetime
    configuration_state: ConfigurationState = ConfigurationState.ENABLED
    operational_state: OperationalState = OperationalState.UNKNOWN
    site: str = ""
    bldg: str = ""
    # Write-only credentials: stored, never serialized to a client or a log.
    username: Optional[str] = field(default=None, repr=False)
    api_token: Optional[str] = field(default=None, repr=False)
    deleted: bool = False


@dataclass(frozen=True)
class Image:
    """A Polaris image build. The wire record (CONTRACT section 4): ``wire.IMAGE``, rendered by
    ``render.py``."""

    KIND: ClassVar[str] = "image"
    id: uuid.UUID
    group: str
    name: str
    tag: str
    git_ref: str
    submitter: str
    nfs_path: str
    retention_day: int
    date_created: datetime
    date_updated: datetime
    base_ref: Optional[str] = None
    groups: tuple[str, ...] = ()  # further groups the image is visible in
    status: ImageStatus = ImageStatus.BUILDING
    size: int = 0
    virtual_size: int = 0
    image_id: str = "0"
    jobs: Optional[list[str]] = None
    manifests: Optional[list[str]] = None
    pin_version: Optional[bool] = None
    is_nfs_storage: bool = True
    is_deleted: bool = False
    meta: Optional[dict[str, Any]] = None
    worker_meta: Optional[dict[str, Any]] = None  # which worker (host, pid) runs or ran the build
    # Internal bookkeeping, never on the wire.
    log_path: Optional[str] = None
    built_at: Optional[datetime] = None
    claimed_by: Optional[str] = None  # worker id holding the build
    lease_until: Optional[int] = None  # the claim expires then unless renewed (runtime/lease.py: µs since the epoch)
    attempts: int = 0

    @property
    def deleted(self) -> bool:
        return self.is_deleted


RECORD_TYPES: dict[str, type] = {cls.KIND: cls for cls in (Group, User, Revocation, TokenRecord, Harness, Engine,
                                                            Image, AuditEntry, LoginFailures)}
