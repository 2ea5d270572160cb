"""Loading a fixtures file (CONTRACT section 5): groups, users, harnesses and engines.

The whole file loads in one write transaction: a bad record anywhere changes nothing. Loading
is an upsert by id (and by name for groups and users), so loading the same file twice is safe.
"""
from __future__ import annotations

import uuid
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..access.auth import check_name, parse_role
from ..core.codec import from_doc, to_doc
from ..core.errors import BadRequest, ValidationError
from ..core.models import Group, OperationalState, Role, User
from ..core.timeutil import Clock, parse_time
from ..core.validation import FieldError, boolean, choice, name_text, validate_body
from ..core.words import count
from ..registry.service import ENGINE, HARNESS, KindSpec
from ..storage import StorageBackend, Tx

_KEPT = {
    "id": lambda v: uuid.UUID(str(v)),
    "created_by": name_text(150),
    "date_created": lambda v: parse_time(str(v)),
    "date_modified": lambda v: parse_time(str(v)),
    "deleted": boolean,
    "operational_state": choice(OperationalState),
}


@dataclass(frozen=True)
class LoadReport:
    groups: int
    users: int
    harnesses: int
    engines: int

    def __str__(self) -> str:
        return (f"loaded {count(self.groups, 'group')}, {count(self.users, 'user')}, "
                f"{count(self.harnesses, 'harness')}, {count(self.engines, 'engine')}")


def _wrap(fn):
    def check(value):
        try:
            return fn(value)
        except FieldError:
            raise
        except (ValueError, TypeError, AttributeError):
            raise FieldError("Not a valid value.") from None
    return check


def read_fixtures(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest(f"{path}: expected a mapping with groups, users, harnesses, engines")
    unknown = set(data) - {"groups", "users", "harnesses", "engines"}
    if unknown:
        raise BadRequest(f"{path}: unknown section(s): {', '.join(sorted(map(str, unknown)))}")
    return data


def _record(spec: KindSpec, item: Any, where: str, clock: Clock, default_user: str) -> Any:
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: expected a mapping")
    item = dict(item)
    group = item.pop("group", None)
    if not isinstance(group, str):
        raise BadRequest(f"{where}: 'group' is required")
    fields = {**spec.fields, **{k: _wrap(v) for k, v in _KEPT.items()}}
    try:
        values = validate_body(item, fields, set(spec.required), read_only=set(), partial=False)
    except ValidationError as exc:
        raise BadRequest(f"{where}: {exc.detail}") from None
    now = clock()
    values = {**spec.defaults, **values}
    values.setdefault("id", uuid.uuid4())
    values.setdefault("created_by", default_user)
    values.setdefault("date_created", now)
    values.setdefault("date_modified", values["date_created"])
    return spec.cls(group=group, **values)


def _upsert(tx: Tx, doc) -> None:
    if tx.get(doc.kind, doc.id) is None:
        tx.insert(doc)
    else:
        tx.update(doc)


def load_fixtures(storage: StorageBackend, data: dict[str, Any], clock: Clock,
                  default_user: str = "system") -> LoadReport:
    groups = data.get("groups") or []
    users = data.get("users") or []
    if not isinstance(groups, list) or not isinstance(users, list):
        raise BadRequest("groups and users must be lists")
    with storage.write() as tx:
        for name in groups:
            name = name.get("name") if isinstance(name, dict) else name
            check_name("group", name)
            if tx.get(Group.KIND, name) is None:
                tx.insert(to_doc(Group(name=name, date_created=clock())))
        for i, item in enumerate(users):
            _load_user(tx, item, f"users[{i}]", clock)
        counts = {}
        for section, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
            items = data.get(section) or []
            if not isinstance(items, list):
                raise BadRequest(f"{section} must be a list")
            for i, item in enumerate(items):
                record = _record(spec, item, f"{section}[{i}]", clock, default_user)
                if tx.get(Group.KIND, record.group) is None:
                    raise BadRequest(f"{section}[{i}]: group {record.group!r} does not exist")
                _upsert(tx, to_doc(record))
            counts[section] = len(items)
    return LoadReport(len(groups), len(users), counts["harnesses"], counts["engines"])


def _load_user(tx: Tx, item: Any, where: str, clock: Clock) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise BadRequest(f"{where}: expected a mapping with a name")
    unknown = set(item) - {"name", "superuser", "groups"}
    if unknown:
        raise BadRequest(f"{where}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    check_name("user", item["name"])
    roles = item.get("groups") or {}
    if not isinstance(roles, dict):
        raise BadRequest(f"{where}: groups must map group names to roles")
    parsed: dict[str, Role] = {}
    for group, role in roles.items():
        if tx.get(Group.KIND, group) is None:
            raise BadRequest(f"{where}: group {group!r} does not exist")
        try:
            parsed[group] = parse_role(role)
        except BadRequest as exc:
            raise BadRequest(f"{where}: {exc.detail}") from None
    superuser = item.get("superuser", False)
    if not isinstance(superuser, bool):
        raise BadRequest(f"{where}: superuser must be true or false")
    existing = tx.get(User.KIND, item["name"])
    if existing is not None and not existing.body.get("deleted"):
        # The same person loaded again keeps their identity (uid), password and tokens.
        user = dataclasses.replace(from_doc(existing), superuser=superuser, roles=parsed)
    else:
        user = User(name=item["name"], date_created=clock(), superuser=superuser, roles=parsed, uid=uuid.uuid4().hex)
    _upsert(tx, to_doc(user))
