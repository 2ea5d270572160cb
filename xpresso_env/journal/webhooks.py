"""Webhook subscriptions: validation, permissions, the deliveries list and redelivery.

A webhook belongs to a group; every route needs ``manage_group`` in it (the URLs and the event
traffic of a group are its administrators' business). The secret is write-only. Deliveries are
written by the journal (``journal.py``) and made by ``webhook_delivery.py``.
"""
from __future__ import annotations

import ipaddress
import socket
import uuid
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from ..access.auth import AuthService, Caller
from ..access.reads import Credentials, Reads, Snapshot
from ..config import EventsSettings
from ..core import wire
from ..core.errors import Conflict, NotFound, ValidationError
from ..core.models import Group
from ..core.timeutil import Clock, format_time
from ..core.validation import (
    Boolean,
    FieldError,
    Text,
    page,
    parse_list_query,
    parse_uuid,
    reject_unknown_params,
    validate_body,
)
from ..storage import OUTBOX, Doc, StorageBackend, Tx, announce  # noqa: F401
from .journal import (
    DELIVERY_KIND,
    OUTBOX_KIND,
    QUEUE_KIND,
    WEBHOOK_KIND,
    Webhook,
    enqueue,
    outbox_id,
    queue_doc,
    refresh_subscriptions,
)

PERMISSION = "manage_group"
Resolver = Callable[[str, int], list[str]]  # host, port -> addresses


def resolve(host: str, port: int) -> list[str]:
    """The addresses a host name stands for (an IP literal stands for itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


# IPv6 prefixes whose last 32 bits are an IPv4 address some part of the path may translate to:
# IPv4-compatible (::/96, deprecated), SIIT IPv4-translated (::ffff:0:0:0/96) and NAT64
# (64:ff9b::/96 well-known, 64:ff9b:1::/48 local-use). A NAT64 gateway turns 64:ff9b::a00:1 into
# 10.0.0.1 on its own network: the embedded address is judged, not the IPv6 wrapper.
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
        return ip.sixtofour
    if ip.teredo is not None:  # (server, client): the client is the host being reached
        return ip.teredo[1]
    if int(ip) > 1 and any(ip in net for net in _EMBEDS_IPV4):  # ::1 and :: are judged as they are
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refused_address(address: str) -> bool:
    """Whether ``events.allow_private: false`` refuses this address: loopback, link-local, private
    ranges, and anything else that is not globally routable (unspecified 0.0.0.0, shared
    100.64/10, reserved, site-local, multicast), and IPv6 forms that carry such an IPv4 address
    (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            if refused_address(str(inner)):
                return True
            # What is reached is that (public) IPv4 address, e.g. through DNS64/NAT64 or a 6to4
            # relay; judged by it, not by `is_global`, whose view of 2002::/16 changed in 3.11.
            if ip.ipv4_mapped is not None or ip.sixtofour is not None or any(ip in net for net in _EMBEDS_IPV4):
                return False
        if ip.is_site_local:  # fec0::/10: deprecated, but still private where it is used
            return True
    return (not ip.is_global) or ip.is_multicast or ip.is_private or ip.is_loopback or ip.is_link_local \
        or ip.is_reserved


def url_host_port(url: str) -> tuple[str, int]:
    """The host (lower-cased, without the trailing dots of a fully qualified name: ``127.0.0.1.``
    and ``localhost.`` are ``127.0.0.1`` and ``localhost``) and the port a URL reaches."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return (parts.hostname or "").rstrip("."), port


def loopback_name(host: str) -> bool:
    """``localhost`` and its subdomains are loopback by definition (RFC 6761), whatever a resolver
    here says of them."""
    host = host.lower()
    return host == "localhost" or host.endswith(".localhost")


class PrivateAddress(Exception):
    pass


def check_destination(url: str, resolver: Resolver, strict: bool) -> list[str]:
    """The addresses to connect to for ``url``; PrivateAddress when one of them is refused.

    ``strict``: the host must resolve (at delivery); at create time an unresolvable name is let
    through (it is checked again, after resolution, at each delivery)."""
    host, port = url_host_port(url)
    if loopback_name(host):
        raise PrivateAddress(f"{host} is a loopback name, and events.allow_private is false.")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [host]
    else:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError):
            if strict:
                raise
            return []
    for address in addresses:
        if refused_address(address):
            shown = host if literal is not None else f"{host} ({address})"
            raise PrivateAddress(f"{shown} is a loopback, link-local or private address, and "
                                 "events.allow_private is false.")
    return addresses


class EventPatterns:
    """The ``events`` field: a non-empty list of known event names or patterns."""

    def __call__(self, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise FieldError('Expected a list of items but got type "%s".' % type(value).__name__)
        if not value:
            raise FieldError("This list may not be empty.")
        if len(value) > wire.MAX_WEBHOOK_EVENTS:
            raise FieldError(f"Ensure this field has no more than {wire.MAX_WEBHOOK_EVENTS} elements.")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise FieldError("Each event must be a string.")
            if item not in wire.EVENT_PATTERNS:
                shown = item[:100]
                if item.endswith(".*") or "*" in item:
                    raise FieldError(f'"{shown}" matches no event. Patterns: "*", "harness.*", "engine.*", '
                                     '"image.*".')
                raise FieldError(f'"{shown}" is not a known event. Known: {", ".join(wire.EVENT_NAMES)}.')
            if item not in out:
                out.append(item)
        return out

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": wire.MAX_WEBHOOK_EVENTS,
                "items": {"type": "string", "enum": list(wire.EVENT_PATTERNS)}}


FIELDS = {"url": Text(wire.WEBHOOK_URL), "events": EventPatterns(), "secret": Text(wire.WEBHOOK_SECRET),
          "active": Boolean()}
REQUIRED = frozenset({"url", "events", "secret"})
READ_ONLY = frozenset({"id", "created_by", "date_created", "date_modified", "group", "deleted"})
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def webhook_wire(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in wire.WEBHOOK.keys}


def delivery_wire(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: body.get(key) for key in wire.DELIVERY.keys}


class WebhookService:
    def __init__(self, storage: StorageBackend, reads: Reads, clock: Clock, settings: EventsSettings,
                 new_id: Callable[[], uuid.UUID] = uuid.uuid4, resolver: Resolver = resolve,
                 wake: Optional[Callable[[], None]] = None):
        self._storage = storage
        self._reads = reads  # the read scope of the API's reads
        self._clock = clock
        self._settings = settings
        self._new_id = new_id
        self._resolver = resolver
        self._wake = wake or (lambda: None)  # nudges the delivery loop after a redelivery

    # -- reads (each in the caller's read scope) -----------------------------------------------
    def list(self, credentials: Credentials, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, WEBHOOK_KIND) as scope:
            caller = scope.caller
            AuthService.require(caller, PERMISSION)
            reject_unknown_params(params, {"limit", "offset"})
            query = parse_list_query(params, {})
            hooks = [d.body for d in scope.tx.query(WEBHOOK_KIND, caller.group, include_deleted=False)
                     if d.group == caller.group]
        chosen, total = page(hooks, query)
        return scope.snapshot([webhook_wire(b) for b in chosen], total)

    def get(self, credentials: Credentials, webhook_id: str, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, WEBHOOK_KIND) as scope:
            AuthService.require(scope.caller, PERMISSION)
            body = self._doc(scope.tx, scope.caller, webhook_id).body
            reject_unknown_params(params)  # after the 404, as it always was
        return scope.snapshot(webhook_wire(body))

    @staticmethod
    def _doc(tx: Tx, caller: Caller, webhook_id: str, lock: bool = False) -> Doc:
        doc = tx.get(WEBHOOK_KIND, str(parse_uuid(webhook_id)), lock=lock)
        if doc is None or doc.group != caller.group or doc.deleted:
            raise NotFound()  # also another group's webhook: no leak
        return doc

    def deliveries(self, credentials: Credentials, webhook_id: str, params: Mapping[str, Any]) -> Snapshot:
        """Newest first."""
        with self._reads.scope(credentials, WEBHOOK_KIND) as scope:
            AuthService.require(scope.caller, PERMISSION)
            doc = self._doc(scope.tx, scope.caller, webhook_id)
            reject_unknown_params(params, {"limit", "offset", "status"})
            query = parse_list_query({k: v for k, v in params.items() if k != "status"}, {})
            status = params.get("status")
            if status is not None and status not in DELIVERY_STATUSES:
                raise ValidationError.one("status", f'"{str(status)[:100]}" is not a valid choice.')
            bodies = [d.body for d in scope.tx.query(DELIVERY_KIND, doc.id)]
        bodies.sort(key=lambda b: b.get("seq", ""), reverse=True)
        if status is not None:
            bodies = [b for b in bodies if b.get("status") == status]
        chosen, total = page(bodies, query)
        return scope.snapshot([delivery_wire(b) for b in chosen], total)

    # -- writes -------------------------------------------------------------------------------
    def _validate(self, body: Any, partial: bool) -> dict[str, Any]:
        values = validate_body(body, FIELDS, set(REQUIRED), set(READ_ONLY), partial)
        if "url" in values and not self._settings.allow_private:
            try:
                check_destination(values["url"], self._resolver, strict=False)
            except PrivateAddress as exc:
                raise ValidationError.one("url", str(exc)) from None
        return values

    def create(self, caller: Caller, body: Callable[[], Any]) -> dict[str, Any]:
        AuthService.require(caller, PERMISSION)
        values = self._validate(body(), partial=False)
        now = format_time(self._clock())
        hook = Webhook(id=str(self._new_id()), group=caller.group, url=values["url"], events=tuple(values["events"]),
                       secret=values["secret"], active=values.get("active", True), created_by=caller.user.name,
                       date_created=now, date_modified=now)
        with self._storage.write() as tx:
            self._check_room(tx, caller.group)
            tx.insert(hook.doc())
            tx.insert(queue_doc(hook.id, now))  # its outbox queue, empty
            refresh_subscriptions(tx, hook.group, now)
        return webhook_wire(hook.body())

    def _check_room(self, tx: Tx, group: str) -> None:
        """At most ``events.max_webhooks_per_group`` live webhooks (active or not) per group
        (CONTRACT section 16). The group's document is locked first, so two creates at once
        cannot both take the last place."""
        tx.get(Group.KIND, group, lock=True)
        live = sum(1 for d in tx.query(WEBHOOK_KIND, group, include_deleted=False)
                   if d.group == group and not d.deleted)
        limit = self._settings.max_webhooks_per_group
        if live >= limit:
            raise Conflict(f"Group {group!r} already has {live} webhooks, the most allowed "
                           f"(events.max_webhooks_per_group: {limit}). Delete one first.")

    def update(self, caller: Caller, webhook_id: str, body: Callable[[], Any]) -> dict[str, Any]:
        AuthService.require(caller, PERMISSION)
        values = self._validate(body(), partial=True)
        with self._storage.write() as tx:
            hook = Webhook.from_body(self._doc(tx, caller, webhook_id, lock=True).body)
            changes: dict[str, Any] = dict(values)
            if "events" in changes:
                changes["events"] = tuple(changes["events"])
            hook = replace(hook, **changes, date_modified=format_time(self._clock()))
            tx.update(hook.doc())
            refresh_subscriptions(tx, hook.group, hook.date_modified)
        return webhook_wire(hook.body())

    def delete(self, caller: Caller, webhook_id: str) -> None:
        """The webhook goes (404 from now on); its pending deliveries fail ("webhook deleted")."""
        AuthService.require(caller, PERMISSION)
        with self._storage.write() as tx:
            hook = Webhook.from_body(self._doc(tx, caller, webhook_id, lock=True).body)
            tx.update(replace(hook, deleted=True, date_modified=format_time(self._clock())).doc())
            refresh_subscriptions(tx, hook.group, format_time(self._clock()))
            queue = tx.get(QUEUE_KIND, hook.id, lock=True)
            if queue is not None:
                for n in range(int(queue.body["head"]), int(queue.body["tail"])):
                    tx.purge(OUTBOX_KIND, outbox_id(hook.id, n))
                tx.update(replace(queue, body={**queue.body, "head": queue.body["tail"]}))
            for delivery in tx.query(DELIVERY_KIND, hook.id):
                if delivery.body.get("status") == "pending":
                    tx.update(replace(delivery, body={**delivery.body, "status": "failed",
                                                      "last_error": "webhook deleted"}))

    def redeliver(self, caller: Caller, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Queue a delivery again (same id, same body); it gets ``max_attempts`` attempts anew."""
        AuthService.require(caller, PERMISSION)
        key = str(parse_uuid(delivery_id))
        with self._storage.write() as tx:
            hook = self._doc(tx, caller, webhook_id)
            delivery = tx.get(DELIVERY_KIND, key, lock=True)
            if delivery is None or delivery.group != hook.id:
                raise NotFound()
            body = {**delivery.body, "status": "pending", "attempts": 0, "date_delivered": None}
            outbox = tx.get(OUTBOX_KIND, str(body.get("outbox_id")), lock=True)
            if outbox is not None and outbox.body.get("delivery_id") == key:  # still queued
                if outbox.body.get("claimed_by") is None:
                    tx.update(replace(outbox, body={**outbox.body, "next_at": 0.0}))  # waiting to retry: now
            else:  # at the end of the webhook's queue, after what is queued now
                body["outbox_id"] = enqueue(tx, hook.id, key, format_time(self._clock()))
            tx.update(replace(delivery, body=body))
            announce(tx, OUTBOX)
        self._wake()
        return delivery_wire(body)

