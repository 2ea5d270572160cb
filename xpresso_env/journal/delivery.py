"""The delivery loop: makes the deliveries the journal put in the outbox.

One dispatcher loop per server process (:attr:`DeliveryService.dispatcher`, a ``runtime/loop.py``
loop the app starts) claims work and hands it to ``events.concurrency`` delivery threads (the
slots); request threads never wait on a receiver. A receiver that hangs costs one slot for
``events.timeout_s``.

* **Fan-out first**: each look first turns the events the journal stored (one per write, however
  many webhooks) into deliveries and outbox entries (``fanout.py``): a write's cost does not grow
  with the number of webhooks.
* **Claims with expiry**, the lease builds and probes use too (``runtime/lease.py``): an outbox
  entry is claimed in a write transaction (``claimed_by``, ``lease_until``), so with several
  processes on one store each entry is attempted by one of them at a time; the claim of a process
  that died expires and another process takes the entry over (at least once, never lost).
* **Per-webhook order**: a webhook's outbox entries are numbered in commit order (``journal.py``:
  ``webhook_queue`` keeps head and tail); only the head is ever claimed, and the next entry waits
  until it is delivered or has failed. Finding work is a read of the queue documents (one per
  webhook) and one look-up by id per webhook with work, however long the outbox.
* **Retries**: a failed attempt sets the entry's ``next_at`` to ``retry_base_s * 2**(attempts-1)``
  from now; after ``max_attempts`` the delivery is ``failed`` and the entry is purged.
* **Signatures**: ``X-Xpresso-Signature-256: sha256=<hex HMAC-SHA256 of the exact body>``; the body
  is rendered the same way from the stored delivery at every attempt, so a retry or a redelivery
  sends the same bytes with the same id.
* **allow_private: false**: the URL's host is resolved and every address checked at each attempt,
  and the connection goes to the checked address (no second lookup a DNS change could exploit).
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..config import EventsSettings
from ..core.errors import XpressoError
from ..core.metrics import NULL_METRICS, MetricsSink
from ..core.timeutil import Clock, format_time
from ..runtime import lease
from ..runtime.loop import Loop
from ..storage import Doc, StorageBackend
from .fanout import fan_out
from .journal import (
    DELIVERY_KIND,
    OUTBOX_KIND,
    QUEUE_KIND,
    WEBHOOK_KIND,
    Webhook,
    outbox_id,
)
from .webhooks import (
    PrivateAddress,
    Resolver,
    check_destination,
    resolve,
    url_host_port,
)

log = logging.getLogger("xpresso_env.webhooks")

EAGER_LOOKS, EAGER_S = 10, 0.02  # after a wake: looks this often, this far apart, before the next poll
MAX_ERROR = 500  # characters of an error kept in a delivery's last_error
READ_LIMIT = 65536  # bytes of a receiver's answer read (and dropped)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def payload(delivery: Mapping[str, Any]) -> bytes:
    """The exact body of a delivery: the same bytes at every attempt."""
    return json.dumps({"id": delivery["id"], "event": delivery["event"], "at": delivery["at"],
                       "group": delivery["group"], "data": delivery["data"]}, separators=(",", ":"),
                      sort_keys=False).encode("utf-8")


@dataclass(frozen=True)
class Attempt:
    status: Optional[int]  # the HTTP status, or None when none came back
    error: Optional[str]  # why it failed; None on success

    @property
    def ok(self) -> bool:
        return self.error is None


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address chosen (and checked) beforehand, whatever the host name says now."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _abort(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, allow_private: bool,
         resolver: Resolver) -> Attempt:
    """One POST; never raises for what the network or the receiver does."""
    # The API only stores http(s) URLs, but a webhook may also come from `import` or an older
    # store: whatever is stored, nothing but http(s) to a named host is ever connected to.
    try:
        parts = urlsplit(url)
        host, port = url_host_port(url)  # a port out of range or not a number: ValueError
    except ValueError as exc:
        return Attempt(None, f"refused: bad URL ({exc})")
    if parts.scheme.lower() not in ("http", "https") or not host:
        return Attempt(None, f"refused: {url[:100]!r} is not an http or https URL")
    try:
        addresses = check_destination(url, resolver, strict=True) if not allow_private else resolver(host, port)
    except PrivateAddress as exc:
        return Attempt(None, f"refused: {exc}")
    except (OSError, UnicodeError) as exc:
        return Attempt(None, f"cannot resolve {host}: {exc}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    send = dict(headers)
    if parts.username is not None:
        import base64

        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
        send["Authorization"] = "Basic " + base64.b64encode(user).decode("ascii")
    cls = _PinnedHTTPS if parts.scheme.lower() == "https" else _PinnedHTTP
    last_error = "no address"
    deadline = time.monotonic() + timeout_s  # the whole attempt, however the receiver dribbles
    for address in addresses[:4]:
        left = deadline - time.monotonic()
        if left <= 0:
            return Attempt(None, f"timed out after {timeout_s:g} s")
        conn = cls(host, port, address, left)
        expired = threading.Event()
        # A receiver sending a byte now and then would reset each socket timeout: a watchdog ends
        # the attempt at the deadline, so a slot is held for timeout_s at most.
        watchdog = threading.Timer(left, _abort, (conn, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", path, body=body, headers=send)
            response = conn.getresponse()
            response.read(READ_LIMIT)
            status = response.status
        except socket.timeout:
            return Attempt(None, f"timed out after {timeout_s:g} s")
        except ConnectionRefusedError:
            last_error = "connection refused"
            continue
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if expired.is_set():
                return Attempt(None, f"timed out after {timeout_s:g} s")
            last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
            continue
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            return Attempt(None, f"timed out after {timeout_s:g} s")
        if 200 <= status < 300:
            return Attempt(status, None)
        return Attempt(status, f"HTTP {status}")
    return Attempt(None, last_error)


class DeliveryService:
    """The dispatcher and its delivery slots. ``run_once`` claims and makes what is due now, in the
    calling thread (tests, benchmarks); `serve` runs the :attr:`dispatcher` loop."""

    def __init__(self, storage: StorageBackend, settings: EventsSettings, clock: Clock,
                 metrics: MetricsSink = NULL_METRICS, resolver: Resolver = resolve,
                 wall: Callable[[], float] = time.time, *, worker_id: str,
                 new_id: Callable[[], uuid.UUID] = uuid.uuid4):
        """:param new_id: the ids of the deliveries the fan-out makes."""
        self._storage = storage
        self._new_id = new_id
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._resolver = resolver
        self._wall = wall  # claims and retries are in wall time: every process shares it
        self.worker_id = worker_id  # whose claims (``lease.worker_id()``)
        self._woken = threading.Event()  # a wake since the dispatcher's last look
        self._eager = 0  # short looks left (the dispatcher's own)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._inflight = 0
        self._lock = threading.Lock()
        # Looks for work every poll_s or when woken; the slots start with it, and its stop gives
        # the attempts in flight a moment to record their outcome.
        self.dispatcher = Loop("webhook-dispatch", self._look, settings.poll_s, logger=log, join_s=5.0,
                               on_start=self._open_slots, on_stop=self._close_slots)

    # -- lifecycle ----------------------------------------------------------------------------
    def _open_slots(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._settings.concurrency, thread_name_prefix="webhook")

    def _close_slots(self) -> None:
        if self._pool is not None:
            # Give in-flight attempts a moment to record their outcome (storage closes next); one
            # that does not finish in time leaves its claim, which expires and is retried.
            self._pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + min(2.0, self._settings.timeout_s)
            while self._inflight and time.monotonic() < deadline:
                time.sleep(0.02)
            self._pool = None

    def wake(self) -> None:
        """Look for work now (the journal calls it when it queued deliveries, a slot when it is free)."""
        self._woken.set()
        self.dispatcher.wake()

    def _look(self) -> Optional[float]:
        """One round of the dispatcher; when it runs next. A wake-up comes from inside the waker's
        transaction, before its commit: after one, look again a few times at short intervals
        rather than only at the next poll."""
        if self._woken.is_set():
            self._woken.clear()
            self._eager = EAGER_LOOKS
        claimed = self._dispatch()
        if claimed and self._inflight < self._settings.concurrency:
            return 0.0  # there may be more due right now
        if self._eager and not claimed:
            self._eager -= 1
            return EAGER_S
        self._eager = 0
        return None

    def _dispatch(self) -> int:
        """One look for work: claim what the free slots can take and hand it to them; the number
        claimed. Never raises (storage down: the next look tries again)."""
        try:
            free = self._settings.concurrency - self._inflight
            if free <= 0:  # every slot busy (hanging receivers): the events still become deliveries
                self.fan_out()
                return 0
            entries = self.claim(free)
            for entry in entries:
                self._submit(entry)
            return len(entries)
        except XpressoError as exc:
            log.warning("webhook dispatch: %s", exc.detail)
        except Exception:
            log.exception("webhook dispatch failed")
        return 0

    def _submit(self, entry: Doc) -> None:
        assert self._pool is not None
        with self._lock:
            self._inflight += 1

        def work() -> None:
            try:
                self.attempt(entry)
            except Exception:
                log.exception("webhook delivery %s failed", entry.body.get("delivery_id"))
            finally:
                with self._lock:
                    self._inflight -= 1
                self.wake()

        self._pool.submit(work)

    def run_once(self) -> int:
        """Claim what is due and attempt it here, one by one; the number of attempts made."""
        made = 0
        while True:
            entries = self.claim(self._settings.concurrency)
            if not entries:
                return made
            for entry in entries:
                self.attempt(entry)
                made += 1

    # -- claims -------------------------------------------------------------------------------
    @staticmethod
    def _due(entry: Optional[Doc], now: float) -> bool:
        """Due for an attempt at wall time ``now``, and held by no live claim."""
        if entry is None or entry.body["next_at"] > now:  # next_at: a retry's time, in wall seconds
            return False
        return lease.takeable(lease.read_fields(entry.body), lease.epoch_micros(now))

    def _due_heads(self, tx: Any, now: float) -> list[str]:
        """The outbox ids of the webhooks' heads that are due and free: a read of the (few) queue
        documents, then one look-up by id per webhook with work."""
        out: list[tuple[str, str]] = []
        for queue in tx.query(QUEUE_KIND):
            head, tail = int(queue.body["head"]), int(queue.body["tail"])
            if head < tail:
                entry = tx.get(OUTBOX_KIND, outbox_id(queue.id, head))
                if self._due(entry, now):
                    out.append((entry.created, entry.id))
        return [entry_id for _, entry_id in sorted(out)]

    def fan_out(self) -> int:
        """Turn the stored events into deliveries (``fanout.py``); the number of deliveries made."""
        return fan_out(self._storage, self._new_id)

    def claim(self, limit: int) -> list[Doc]:
        """Fan out the waiting events, then claim up to ``limit`` due heads (a read first: most
        polls find nothing to do)."""
        self.fan_out()
        now = self._wall()
        with self._storage.read() as tx:
            candidates = self._due_heads(tx, now)[:limit]
        if not candidates:
            return []
        claimed: list[Doc] = []
        # An attempt ends by timeout_s: the claim outlives it by lease_s.
        held = lease.claim(self.worker_id, lease.epoch_micros(now), self._settings.timeout_s + self._settings.lease_s)
        with self._storage.write() as tx:
            for entry_id in candidates:
                current = tx.get(OUTBOX_KIND, entry_id, lock=True)  # another process may have won it
                if not self._due(current, now):
                    continue
                doc = replace(current, body={**current.body, **held.fields()})
                tx.update(doc)
                claimed.append(doc)
        return claimed

    # -- one attempt --------------------------------------------------------------------------
    def attempt(self, entry: Doc) -> Attempt:
        with self._storage.read() as tx:
            delivery = tx.get(DELIVERY_KIND, entry.body["delivery_id"])
            hook_doc = tx.get(WEBHOOK_KIND, entry.body["webhook_id"])
        if delivery is None or hook_doc is None or hook_doc.deleted:
            result = Attempt(None, "webhook deleted")
            self._finish(entry, result, final=True)
            return result
        hook = Webhook.from_body(hook_doc.body)
        body = payload(delivery.body)
        headers = {"Content-Type": "application/json", "User-Agent": f"xpresso-env/{__version__}",
                   "X-Xpresso-Event": delivery.body["event"], "X-Xpresso-Delivery": delivery.id,
                   "X-Xpresso-Signature-256": signature(hook.secret, body)}
        result = post(hook.url, body, headers, self._settings.timeout_s, self._settings.allow_private,
                      self._resolver)
        self._finish(entry, result, final=False)
        return result

    def _finish(self, entry: Doc, result: Attempt, final: bool) -> None:
        now = self._wall()
        with self._storage.write() as tx:
            current = tx.get(OUTBOX_KIND, entry.id, lock=True)
            delivery = tx.get(DELIVERY_KIND, entry.body["delivery_id"], lock=True)
            if current is None or current.body.get("claimed_by") != self.worker_id:
                return  # our claim expired and another process took the entry over: its result counts
            attempts = (delivery.body.get("attempts", 0) if delivery is not None else 0) + 1
            if result.ok:
                outcome = "delivered"
            elif final or attempts >= self._settings.max_attempts:
                outcome = "failed"
            else:
                outcome = "retry"
            if outcome == "retry":
                wait = self._settings.retry_base_s * (2 ** (attempts - 1))
                tx.update(replace(current, body={**current.body, **lease.release(), "next_at": now + wait}))
            else:  # done with it: the next entry of the webhook becomes its head
                tx.purge(OUTBOX_KIND, entry.id)
                queue = tx.get(QUEUE_KIND, entry.body["webhook_id"], lock=True)
                if queue is not None and int(queue.body["head"]) == int(entry.body["n"]):
                    tx.update(replace(queue, body={**queue.body, "head": int(entry.body["n"]) + 1}))
            if delivery is not None:
                tx.update(replace(delivery, body={
                    **delivery.body, "attempts": attempts, "status": "pending" if outcome == "retry" else outcome,
                    "last_status_code": result.status, "last_error": result.error,
                    "date_delivered": format_time(self._clock()) if outcome == "delivered" else None}))
        self._metrics.delivery_finished(outcome)
        if outcome == "failed":
            log.warning("webhook delivery %s failed after %d attempts: %s", entry.body["delivery_id"], attempts,
                        result.error)
