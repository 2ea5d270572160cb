"""Harness and engine registries: validation, permissions, soft delete, name look-up."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

from ..access.auth import AuthService, Caller
from ..access.reads import Credentials, Reads, Snapshot
from ..core import wire
from ..core.codec import from_doc, record_body, to_doc
from ..core.errors import Conflict, NameConflict, NotFound
from ..core.models import ConfigurationState, Engine, EngineType, Harness, HarnessType, OperationalState
from ..core.timeutil import Clock
from ..core.validation import (
    Boolean,
    Choice,
    FieldError,
    ListQuery,
    Nullable,
    Rule,
    ServerUrl,
    Text,
    page,
    parse_list_query,
    parse_uuid,
    reject_unknown_params,
    validate_body,
)
from ..journal.journal import Journal
from ..probes.state import reset_changes
from ..runtime.events import Events
from ..storage import StorageBackend, Tx, filter_docs

# Keys a client may see but never set (a 400 field error), under their v1 names too.
_SET_BY_SERVICE = {"id", "created_by", "date_created", "date_modified", "deleted", "operational_state", "group"}
READ_ONLY = _SET_BY_SERVICE | {wire.V1_NAMES[k] for k in _SET_BY_SERVICE if k in wire.V1_NAMES}


@dataclass(frozen=True)
class KindSpec:
    kind: str
    cls: type
    fields: Mapping[str, Rule]  # the body fields a client may send, each with its rule
    required: frozenset[str]
    filters: Mapping[str, Optional[type]]
    add: str
    change: str
    delete: str
    label: str
    defaults: Mapping[str, Any]  # values of fields a create may leave out


_COMMON: dict[str, Rule] = {
    "name": Text(wire.RECORD_NAME),
    "configuration_state": Choice(ConfigurationState),
    "site": Text(wire.SITE),
    "bldg": Text(wire.SITE),
}

HARNESS = KindSpec(
    kind=Harness.KIND, cls=Harness, label="harness",
    fields={**_COMMON, "harness": Choice(HarnessType), "path": Text(wire.ABSOLUTE_PATH),
            "supporting_path": Text(wire.ABSOLUTE_PATH_OR_EMPTY), "support_liveview": Boolean()},
    required=frozenset({"name", "path"}),
    filters={"name": None, "harness": HarnessType, "site": None, "bldg": None,
             "configuration_state": ConfigurationState, "operational_state": OperationalState},
    add="add_harness", change="change_harness", delete="delete_harness",
    defaults={"harness": HarnessType.PYATS},
)

ENGINE = KindSpec(
    kind=Engine.KIND, cls=Engine, label="engine",
    fields={**_COMMON, "type": Choice(EngineType), "base_url": ServerUrl(),
            "username": Nullable(Text(wire.USERNAME)), "api_token": Nullable(Text(wire.API_TOKEN))},
    required=frozenset({"name", "base_url"}),
    filters={"name": None, "type": EngineType, "site": None, "bldg": None,
             "configuration_state": ConfigurationState, "operational_state": OperationalState},
    add="add_engine", change="change_engine", delete="delete_engine",
    defaults={"type": EngineType.JENKINS},
)

SPECS = {HARNESS.kind: HARNESS, ENGINE.kind: ENGINE}
CATEGORIES = {"harnesses": HARNESS, "engines": ENGINE}  # the name look-up's path segment


# The reads of one group's records inside a read transaction (the service's reads and the storage
# benchmark): stored bodies, as the API renders them.
def select(tx: Tx, group: str, spec: KindSpec, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
    """A page of the group's records of ``spec`` that match ``query``, and their unpaged count."""
    docs = tx.query(spec.kind, group, include_deleted=query.include_deleted)
    docs = filter_docs(docs, query.filters) if query.filters else docs
    chosen, total = page(docs, query)
    return [d.body for d in chosen], total


def find(tx: Tx, group: str, spec: KindSpec, record_id: str) -> dict[str, Any]:
    doc = tx.get(spec.kind, str(parse_uuid(record_id)))
    if doc is None or doc.group != group:
        raise NotFound()  # also for another group's record: no leak
    return doc.body


def find_name(tx: Tx, group: str, spec: KindSpec, name: str) -> dict[str, Any]:
    try:
        name = spec.fields["name"](name)
    except FieldError:
        raise NotFound() from None  # no record can have such a name
    doc = tx.find_name(spec.kind, group, name)
    if doc is None:
        raise NotFound()
    return doc.body


class RegistryService:
    def __init__(self, storage: StorageBackend, reads: Reads, clock: Clock, events: Events,
                 new_id: Callable[[], uuid.UUID] = uuid.uuid4, *, journal: Journal):
        self._storage = storage
        self._reads = reads
        self._clock = clock
        self._events = events  # fired after commit
        self._new_id = new_id
        # History rows and webhook outbox entries, written inside each change's own transaction.
        self._journal = journal

    # -- reads --------------------------------------------------------------------------
    # Each read opens the read scope (authentication, one read transaction, the answer's
    # dependencies) and answers a Snapshot of stored bodies (wire-format values, see
    # codec.record_body): the API renders them without decoding each record, which is most of the
    # cost of a list. The query is checked after the caller (CONTRACT section 7 order).
    @staticmethod
    def parse_query(spec: KindSpec, params: Mapping[str, Any]) -> ListQuery:
        return parse_list_query(params, spec.filters)

    def list(self, credentials: Credentials, spec: KindSpec, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, spec.kind) as scope:
            bodies, total = select(scope.tx, scope.caller.group, spec, self.parse_query(spec, params))
        return scope.snapshot(bodies, total)

    def get(self, credentials: Credentials, spec: KindSpec, record_id: str, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, spec.kind, one_statement=True) as scope:
            reject_unknown_params(params)
            body = find(scope.tx, scope.caller.group, spec, record_id)
        return scope.snapshot(body)

    def lookup(self, credentials: Credentials, category: str, name: str, params: Mapping[str, Any]) -> Snapshot:
        """GET /api/v{1,2}/resources/{category}/{name}: the live record of that name (a 404 for a
        category other than ``CATEGORIES``, after the caller and the query are checked)."""
        spec = CATEGORIES.get(category)
        with self._reads.scope(credentials, spec.kind if spec is not None else None, one_statement=True) as scope:
            reject_unknown_params(params)
            if spec is None:
                raise NotFound()
            body = find_name(scope.tx, scope.caller.group, spec, name)
        return scope.snapshot(body)

    # -- writes ---------------------------------------------------------------------------
    def validate(self, spec: KindSpec, body: Any, partial: bool) -> dict[str, Any]:
        return validate_body(body, spec.fields, spec.required, READ_ONLY, partial)

    # Writes take the body as a callable: it is read after the permission check, so a refused
    # caller gets its 403 before any 413/415/400 about the body (CONTRACT section 7).
    def create(self, caller: Caller, spec: KindSpec, body: Callable[[], Any]) -> Any:
        AuthService.require(caller, spec.add)
        values = {**spec.defaults, **self.validate(spec, body(), partial=False)}
        now = self._clock()
        record = spec.cls(id=self._new_id(), group=caller.group, created_by=caller.user.name,
                          date_created=now, date_modified=now, **values)
        with self._storage.write() as tx:
            self._insert(tx, spec, record)
            self._journal.record(tx, kind=spec.kind, event="created", group=caller.group, record_id=str(record.id),
                                 before=None, after=record_body(record), by=caller.user.name)
        self._events.record_saved(spec.kind, record, created=True)
        return record

    @staticmethod
    def _insert(tx: Tx, spec: KindSpec, record: Any) -> None:
        try:
            tx.insert(to_doc(record))
        except NameConflict:
            raise NameConflict(f"A {spec.label} named {record.name!r} already exists in this group.") from None

    def update(self, caller: Caller, spec: KindSpec, record_id: str, body: Callable[[], Any]) -> Any:
        AuthService.require(caller, spec.change)
        key = str(parse_uuid(record_id))
        values = self.validate(spec, body(), partial=True)
        with self._storage.write() as tx:
            doc = tx.get(spec.kind, key, lock=True)
            if doc is None or doc.group != caller.group:
                raise NotFound()
            if doc.deleted:
                raise Conflict(f"This {spec.label} has been deleted: it cannot be changed.")
            record = replace(from_doc(doc), **values, date_modified=self._clock())
            # CONTRACT §8: a new target (or DISABLED) shows UNKNOWN until probed again.
            record = replace(record, **reset_changes(spec.kind, doc.body, record_body(record)))
            try:
                tx.update(to_doc(record))
            except NameConflict:
                raise NameConflict(f"A {spec.label} named {record.name!r} already exists in this group.") from None
            self._journal.record(tx, kind=spec.kind, event="updated", group=caller.group, record_id=key,
                                 before=doc.body, after=record_body(record), by=caller.user.name)
        self._events.record_saved(spec.kind, record, created=False)
        return record

    def delete(self, caller: Caller, spec: KindSpec, record_id: str) -> None:
        AuthService.require(caller, spec.delete)
        key = str(parse_uuid(record_id))
        with self._storage.write() as tx:
            doc = tx.get(spec.kind, key, lock=True)
            if doc is None or doc.group != caller.group:
                raise NotFound()
            record = from_doc(doc)
            if record.deleted:
                return  # deleting twice changes nothing
            record = replace(record, deleted=True, date_modified=self._clock())
            tx.update(to_doc(record))
            self._journal.record(tx, kind=spec.kind, event="deleted", group=caller.group, record_id=key,
                                 before=doc.body, after=record_body(record), by=caller.user.name)
        self._events.record_deleted(spec.kind, record)
