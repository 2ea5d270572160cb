"""Harness and engine registries: validation, permissions, soft delete, name look-up."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

from ..codec import from_doc, to_doc
from ..errors import NameConflict, NotFound
from ..models import (ConfigurationState, Engine, EngineType, Harness, HarnessType, OperationalState)
from ..storage import StorageBackend, Tx, filter_docs
from ..timeutil import Clock
from .auth import AuthService, Caller
from .validation import (FieldError, ListQuery, absolute_path, boolean, choice, http_url, name_text, optional, page,
                         parse_list_query, parse_uuid, text, validate_body)

READ_ONLY = {"id", "uuid", "created_by", "date_created", "date_modified", "deleted", "operational_state",
             "oper_state", "group"}


@dataclass(frozen=True)
class KindSpec:
    kind: str
    cls: type
    fields: Mapping[str, Callable[[Any], Any]]
    required: frozenset[str]
    filters: Mapping[str, Optional[type]]
    add: str
    change: str
    delete: str
    label: str


_COMMON = {
    "name": name_text(128),
    "configuration_state": choice(ConfigurationState),
    "site": text(64),
    "bldg": text(64),
}

HARNESS = KindSpec(
    kind=Harness.KIND, cls=Harness, label="harness",
    fields={**_COMMON, "harness": choice(HarnessType), "path": absolute_path(),
            "supporting_path": absolute_path(blank=True), "support_liveview": boolean},
    required=frozenset({"name", "path"}),
    filters={"name": None, "harness": HarnessType, "site": None, "bldg": None,
             "configuration_state": ConfigurationState, "operational_state": OperationalState},
    add="add_harness", change="change_harness", delete="delete_harness",
)

ENGINE = KindSpec(
    kind=Engine.KIND, cls=Engine, label="engine",
    fields={**_COMMON, "type": choice(EngineType), "base_url": http_url,
            "username": optional(text(256)), "api_token": optional(text(4096))},
    required=frozenset({"name", "base_url"}),
    filters={"name": None, "type": EngineType, "site": None, "bldg": None,
             "configuration_state": ConfigurationState, "operational_state": OperationalState},
    add="add_engine", change="change_engine", delete="delete_engine",
)

SPECS = {HARNESS.kind: HARNESS, ENGINE.kind: ENGINE}
_DEFAULTS = {Harness.KIND: {"harness": HarnessType.PYATS}, Engine.KIND: {"type": EngineType.JENKINS}}


class RegistryService:
    def __init__(self, storage: StorageBackend, clock: Clock, notify: Callable[..., None] = lambda *a, **k: None,
                 new_id: Callable[[], uuid.UUID] = uuid.uuid4):
        self._storage = storage
        self._clock = clock
        self._notify = notify  # fires the xpresso_record_* hooks after commit
        self._new_id = new_id

    # -- reads (in the caller's transaction, so auth and data come from one snapshot) ----------
    @staticmethod
    def parse_query(spec: KindSpec, params: Mapping[str, Any]) -> ListQuery:
        return parse_list_query(params, spec.filters)

    # Reads answer stored bodies (wire-format values, see codec.record_body): the API renders
    # them without decoding each record, which is most of the cost of a list.
    def list(self, tx: Tx, caller: Caller, spec: KindSpec, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        docs = tx.query(spec.kind, caller.group, include_deleted=query.include_deleted)
        docs = filter_docs(docs, query.filters) if query.filters else docs
        chosen, total = page(docs, query)
        return [d.body for d in chosen], total

    def get(self, tx: Tx, caller: Caller, spec: KindSpec, record_id: str) -> dict[str, Any]:
        doc = tx.get(spec.kind, str(parse_uuid(record_id)))
        if doc is None or doc.group != caller.group:
            raise NotFound()  # also for another group's record: no leak
        return doc.body

    def lookup(self, tx: Tx, caller: Caller, spec: KindSpec, name: str) -> dict[str, Any]:
        try:
            name = HARNESS.fields["name"](name)
        except FieldError:
            raise NotFound() from None  # no record can have such a name
        doc = tx.find_name(spec.kind, caller.group, name)
        if doc is None:
            raise NotFound()
        return doc.body

    # -- writes ---------------------------------------------------------------------------
    def validate(self, spec: KindSpec, body: Any, partial: bool) -> dict[str, Any]:
        return validate_body(body, spec.fields, spec.required, READ_ONLY, partial)

    def create(self, caller: Caller, spec: KindSpec, body: Any) -> Any:
        AuthService.require(caller, spec.add)
        values = {**_DEFAULTS[spec.kind], **self.validate(spec, body, partial=False)}
        now = self._clock()
        record = spec.cls(id=self._new_id(), group=caller.group, created_by=caller.user.name,
                          date_created=now, date_modified=now, **values)
        with self._storage.write() as tx:
            self._insert(tx, spec, record)
        self._notify("saved", spec.kind, record, created=True)
        return record

    @staticmethod
    def _insert(tx: Tx, spec: KindSpec, record: Any) -> None:
        try:
            tx.insert(to_doc(record))
        except NameConflict:
            raise NameConflict(f"A {spec.label} named {record.name!r} already exists in this group.") from None

    def update(self, caller: Caller, spec: KindSpec, record_id: str, body: Any) -> Any:
        AuthService.require(caller, spec.change)
        key = str(parse_uuid(record_id))
        values = self.validate(spec, body, partial=True)
        with self._storage.write() as tx:
            doc = tx.get(spec.kind, key, lock=True)
            if doc is None or doc.group != caller.group:
                raise NotFound()
            record = replace(from_doc(doc), **values, date_modified=self._clock())
            try:
                tx.update(to_doc(record))
            except NameConflict:
                raise NameConflict(f"A {spec.label} named {record.name!r} already exists in this group.") from None
        self._notify("saved", spec.kind, record, created=False)
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
        self._notify("deleted", spec.kind, record)
